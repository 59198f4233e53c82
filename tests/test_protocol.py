"""Protocol v1 without I/O: bytes in, frames out, for both codecs and every malformed case."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from hub.codes import CloseCode
from hub.notification import Notification
from hub.protocol import (
    JSON,
    MSGPACK,
    Codec,
    Connect,
    Pong,
    ProtocolError,
    Refresh,
    choose_codec,
    connected_frame,
    error_frame,
    parse_client_frame,
)
from hub.topics import Offset

CODECS = [JSON, MSGPACK]


def wire(codec: Codec, frame: Any) -> str | bytes:
    return json.dumps(frame) if codec is JSON else msgpack.packb(frame)


@pytest.mark.parametrize("codec", CODECS, ids=["json", "msgpack"])
class TestClientFrames:
    def test_connect_with_since(self, codec: Codec) -> None:
        frame = parse_client_frame(codec, wire(codec, {"type": "connect", "token": "t", "since": {"user.1": "5-0"}}))
        assert frame == Connect(token="t", since={"user.1": Offset(5, 0)})

    def test_connect_without_since(self, codec: Codec) -> None:
        assert parse_client_frame(codec, wire(codec, {"type": "connect", "token": "t"})) == Connect("t", {})

    def test_refresh_and_pong(self, codec: Codec) -> None:
        assert parse_client_frame(codec, wire(codec, {"type": "refresh", "token": "x"})) == Refresh("x")
        assert parse_client_frame(codec, wire(codec, {"type": "pong"})) == Pong()

    @pytest.mark.parametrize(
        ("frame", "code"),
        [
            ([1, 2], CloseCode.PROTOCOL_ERROR),
            ("connect", CloseCode.PROTOCOL_ERROR),
            (None, CloseCode.PROTOCOL_ERROR),
            ({}, CloseCode.PROTOCOL_ERROR),
            ({"type": "subscribe"}, CloseCode.PROTOCOL_ERROR),
            ({"type": 7}, CloseCode.PROTOCOL_ERROR),
            ({"type": "connect"}, CloseCode.BAD_TOKEN),
            ({"type": "connect", "token": ""}, CloseCode.BAD_TOKEN),
            ({"type": "connect", "token": 42}, CloseCode.BAD_TOKEN),
            ({"type": "connect", "token": "x" * 9000}, CloseCode.BAD_TOKEN),
            ({"type": "refresh"}, CloseCode.BAD_TOKEN),
            ({"type": "connect", "token": "t", "since": []}, CloseCode.PROTOCOL_ERROR),
            ({"type": "connect", "token": "t", "since": {"user.*": "1-0"}}, CloseCode.PROTOCOL_ERROR),
            ({"type": "connect", "token": "t", "since": {"user.#": "1-0"}}, CloseCode.PROTOCOL_ERROR),
            ({"type": "connect", "token": "t", "since": {"": "1-0"}}, CloseCode.PROTOCOL_ERROR),
            ({"type": "connect", "token": "t", "since": {"user.1": "abc"}}, CloseCode.PROTOCOL_ERROR),
            ({"type": "connect", "token": "t", "since": {"user.1": 5}}, CloseCode.PROTOCOL_ERROR),
            ({"type": "connect", "token": "t", "since": {"user.1": "1-2-3"}}, CloseCode.PROTOCOL_ERROR),
            (
                {"type": "connect", "token": "t", "since": {f"t{i}": "1-0" for i in range(65)}},
                CloseCode.PROTOCOL_ERROR,
            ),
        ],
    )
    def test_malformed(self, codec: Codec, frame: Any, code: CloseCode) -> None:
        with pytest.raises(ProtocolError) as caught:
            parse_client_frame(codec, wire(codec, frame))
        assert caught.value.code == code

    def test_unreadable_bytes(self, codec: Codec) -> None:
        data: str | bytes = "{not json" if codec is JSON else b"\xc1\xc1"
        with pytest.raises(ProtocolError, match="unreadable"):
            parse_client_frame(codec, data)

    def test_wrong_frame_kind(self, codec: Codec) -> None:
        other: str | bytes = msgpack.packb({"type": "pong"}) if codec is JSON else json.dumps({"type": "pong"})
        with pytest.raises(ProtocolError, match=r"expected a (text|binary) frame"):
            parse_client_frame(codec, other)


def test_msgpack_map_with_non_string_keys_is_refused() -> None:
    with pytest.raises(ProtocolError):
        parse_client_frame(MSGPACK, msgpack.packb({1: "connect"}))


def test_truncated_msgpack_is_refused() -> None:
    data = msgpack.packb({"type": "connect", "token": "abcdef"})
    with pytest.raises(ProtocolError):
        parse_client_frame(MSGPACK, data[:-3])


def test_choose_codec() -> None:
    assert choose_codec([]) is JSON
    assert choose_codec(["hub.v1.msgpack"]) is MSGPACK
    assert choose_codec(["other", "hub.v1.json"]) is JSON
    assert choose_codec(["mqtt"]) is None


@pytest.mark.parametrize("codec", CODECS, ids=["json", "msgpack"])
def test_server_frames_round_trip(codec: Codec) -> None:
    frame = connected_frame(
        conn_id="c", user="42", topics=["user.42"], replica="r1", ping_interval=25, recovered=True, offsets={}
    )
    assert codec.decode(codec.encode(frame)) == frame
    assert codec.decode(codec.encode(error_frame(CloseCode.FORBIDDEN, "no"))) == {
        "type": "error",
        "code": 4003,
        "message": "no",
    }


@pytest.mark.parametrize("codec", CODECS, ids=["json", "msgpack"])
def test_notification_frame_is_encoded_once_per_codec(codec: Codec) -> None:
    n = Notification(id="a", topic="user.1", offset="5-1", ts=7, data={"text": "hé"})
    first = n.frame(codec)
    assert n.frame(codec) is first
    assert codec.decode(first) == {
        "type": "notification",
        "id": "a",
        "topic": "user.1",
        "offset": "5-1",
        "ts": 7,
        "data": {"text": "hé"},
    }
    assert n.position == Offset(5, 1)


def test_notification_without_offset_has_no_offset_field() -> None:
    n = Notification(id="a", topic="user.1", offset=None, ts=7, data=1)
    assert "offset" not in JSON.decode(n.frame(JSON))


# ------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "data",
    [
        "[" * 60_000,  # RecursionError in json.loads: was 1011 and a traceback
        "{" * 60_000,
        '{"type":"connect","token":"t","since":' + "[" * 5_000 + "]" * 5_000 + "}",
        '{"type":"connect","token":"t","x":NaN}',
        '{"type":"connect","token":"t","x":Infinity}',
        '{"type":"connect","token":"\\ud800"}',  # a lone surrogate: not encodable, refused on the way in
    ],
    ids=["60k-brackets", "60k-braces", "deep-since", "nan", "infinity", "lone-surrogate"],
)
def test_hostile_json_is_a_protocol_error(data: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(JSON, data)
    assert caught.value.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "data",
    [
        b"\x91" * 60_000 + b"\xc0",  # a list in a list ... 60,000 deep
        b"\x81\xa1a" * 2_000 + b"\xc0",  # a map in a map ... 2,000 deep
        msgpack.packb({"type": "connect", "token": "t", "x": float("nan")}),
        msgpack.packb({"type": "connect", "token": b"bytes"}, use_bin_type=True),
    ],
    ids=["60k-lists", "2k-maps", "nan", "bin"],
)
def test_hostile_msgpack_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(MSGPACK, data)
    assert caught.value.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("codec", CODECS, ids=["json", "msgpack"])
@pytest.mark.parametrize(
    "offset",
    ["\u0661-\u0662", "1-\u0663", "\uff11-0", f"{2**64}-0", f"0-{2**64}", "1-2\n", "+1-0"],
    ids=["arabic-indic", "mixed", "fullwidth", "ms-2^64", "seq-2^64", "newline", "plus"],
)
def test_since_offsets_are_ascii_and_below_2_64(codec: Codec, offset: str) -> None:
    frame = {"type": "connect", "token": "t", "since": {"user.1": offset}}
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(codec, wire(codec, frame))
    assert caught.value.code == CloseCode.PROTOCOL_ERROR


def test_since_at_the_top_of_the_range_is_read() -> None:
    top = f"{2**64 - 1}-{2**64 - 1}"
    frame = parse_client_frame(JSON, json.dumps({"type": "connect", "token": "t", "since": {"user.1": top}}))
    assert frame == Connect("t", {"user.1": Offset(2**64 - 1, 2**64 - 1)})


def test_json_dumps_is_the_strict_encoder() -> None:
    from hub.payload import dumps_json
    from hub.protocol import json_dumps

    assert json_dumps is dumps_json
    with pytest.raises(ValueError, match="JSON compliant"):
        json_dumps({"x": float("nan")})


@pytest.mark.parametrize(
    ("data", "codec"),
    [("\ud800", JSON), (float("nan"), JSON), (2**70, MSGPACK)],
    ids=["lone-surrogate-json", "nan-json", "int-past-64-bits-msgpack"],
)
def test_a_notification_that_cannot_be_sent_fails_at_encoding(data: object, codec: Codec) -> None:
    n = Notification(id="a", topic="user.1", offset="5-1", ts=7, data=data)
    with pytest.raises((ValueError, OverflowError)):
        n.frame(codec)
