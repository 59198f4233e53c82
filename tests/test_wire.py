"""hub.wire without a server: what crosses AMQP, built and read back."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from typing import Any

import msgpack
import pamqp.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, header

from hub import amqp_decode, wire
from hub.amqp_decode import problems
from hub.notification import now_ms
from hub.payload import MAX_DEPTH, check, loads_json
from hub.protocol import JSON, MSGPACK
from hub.wire import Refused, decode_body, parse_live, parse_ts, read_publish
from tests import raw_amqp as raw

NOW = 1_750_000_000_000


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def content_header(props: bytes) -> header.ContentHeader:
    return amqp_decode.unmarshal_header(struct.pack(">HHQ", 60, 0, 0) + props)


def refused(kind: str, call: Any, *args: Any, **kwargs: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        call(*args, **kwargs)
    assert caught.value.kind == kind, caught.value
    assert str(caught.value) == f"{kind}: {caught.value.text}"
    return caught.value


# ------------------------------------------------------------------ building a publisher's message


def test_build_message() -> None:
    before = now_ms()
    message, id = wire.build_message({"text": "é"}, message_id="m-1", ttl=1.5)
    properties = message.properties
    assert id == "m-1"
    assert message.body == '{"text":"é"}'.encode()
    assert properties.content_type == "application/json"
    assert properties.message_id == "m-1"
    assert properties.delivery_mode == 2
    assert properties.expiration == "1500"
    assert before <= properties.headers["ts"] <= now_ms()
    # pamqp encodes it (the publish would not fail on the client side)
    pamqp.frame.marshal(header.ContentHeader(body_size=len(message.body), properties=properties), 1)


@pytest.mark.parametrize(
    ("ttl", "expiration"), [(0.029, "29"), (0.0001, "1"), (1, "1000"), (wire.MAX_TTL_SECONDS, "604800000")]
)
def test_expiration_is_whole_milliseconds(ttl: float, expiration: str) -> None:
    message, _ = wire.build_message(None, ttl=ttl)
    assert message.properties.expiration == expiration


def test_build_message_defaults() -> None:
    message, id = wire.build_message([1], persistent=False)
    assert message.properties.message_id == id
    assert len(id) == 32
    assert message.properties.delivery_mode == 1
    assert message.properties.expiration is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"message_id": "😀" * 64}, "at most 255 UTF-8 bytes"),
        ({"message_id": "a\nb"}, "without control characters"),
        ({"message_id": ""}, "non-empty string"),
        ({"ttl": 1e12}, "at most 604800 seconds"),
        ({"ttl": 0}, "more than 0"),
        ({"ttl": math.nan}, "a number of seconds"),
        ({"ttl": True}, "a number of seconds"),
    ],
)
def test_build_message_refuses(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        wire.build_message({}, **fields)


@pytest.mark.parametrize("data", [math.nan, {"x": math.inf}, "\ud800", nested(MAX_DEPTH + 1), 2**64])
def test_build_message_refuses_data_a_client_could_not_read(data: Any) -> None:
    with pytest.raises(ValueError, match="expected data JSON can carry"):
        wire.build_message(data)


# ------------------------------------------------------------------ ts


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"ts": NOW - 5}, NOW - 5),
        ({"ts": NOW + 3_600_000}, NOW + 3_600_000),
        ({"ts": True}, NOW),  # a bool is an int to Python, not a time
        ({"ts": 1.7e12}, NOW),
        ({"ts": str(NOW)}, NOW),
        ({"ts": b"1"}, NOW),
        ({"ts": -1}, NOW),
        ({"ts": 5}, NOW),  # 1970: not a time a publisher meant
        ({"ts": NOW + 2 * 86_400_000}, NOW),  # two days ahead of the hub's clock
        ({"ts": 2**70}, NOW),
        ({}, NOW),
        (None, NOW),
        ("ts", NOW),
    ],
)
def test_parse_ts(headers: object, expected: int) -> None:
    assert parse_ts(headers, NOW) == expected


# ------------------------------------------------------------------ bodies


@pytest.mark.parametrize(
    ("body", "content_type", "value"),
    [
        (b'{"n": 1}', "application/json", {"n": 1}),
        (b'{"n": 1}', "Application/JSON; charset=utf-8", {"n": 1}),
        (b'{"n": 1}', "application/vnd.api+json", {"n": 1}),
        (b'{"n": 1}', None, {"n": 1}),
        (b'{"n": 1}', "", {"n": 1}),
        (b"plain words", None, "plain words"),
        (b"", None, ""),
        (b"[[[", None, "[[["),
        (b"42", "text/plain", "42"),
        (b'{"n": 1}', "application/octet-stream", '{"n": 1}'),  # neither JSON nor msgpack: text
        (msgpack.packb({"n": [1, 2.5]}), "application/msgpack", {"n": [1, 2.5]}),
        (msgpack.packb("é"), "application/x-msgpack", "é"),
        (deep_json(MAX_DEPTH).encode(), "application/json", nested(MAX_DEPTH)),
    ],
)
def test_decode_body(body: bytes, content_type: str | None, value: Any) -> None:
    json_text, decoded = decode_body(body, content_type)
    assert decoded == value
    assert loads_json(json_text) == value


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"n": ', "application/json", "unreadable JSON"),  # the README: dead-lettered, not a string
        (b"plain", "application/json", "unreadable JSON"),
        (b"", "application/json", "unreadable JSON"),
        (b'{"n": NaN}', "application/json", "finite numbers"),
        (b'{"n": NaN}', None, "finite numbers"),
        (b"[Infinity]", None, "finite numbers"),
        (b"1e400", None, "finite numbers"),
        (b'"\\ud800"', "application/json", "lone surrogates"),
        (b'{"\\udfff": 1}', None, "lone surrogates"),
        (deep_json(3000).encode(), "application/json", f"nested at most {MAX_DEPTH}"),
        (deep_json(3000).encode(), None, f"nested at most {MAX_DEPTH}"),
        (deep_json(MAX_DEPTH + 1).encode(), None, f"nested at most {MAX_DEPTH}"),
        (b"18446744073709551616", None, "integers msgpack can carry"),
        (b"\xff\xfe", None, "'utf-8' codec"),
        (b"\xff\xfe", "application/json", "'utf-8' codec"),
        (b"\xff", "text/plain", "'utf-8' codec"),
        (b"\xc1\xff", "application/msgpack", "unreadable msgpack"),
        (b"\x91" * 1000 + b"\xc0", "application/msgpack", f"nested at most {MAX_DEPTH}"),  # 1,000 deep
        (b"\x91" * (MAX_DEPTH + 1) + b"\xc0", "application/msgpack", f"nested at most {MAX_DEPTH}"),
        (b"\xa3\xed\xa0\x80", "application/msgpack", "unreadable msgpack"),  # a surrogate, CESU-encoded
        (msgpack.packb(math.nan), "application/msgpack", "finite numbers"),
        (msgpack.packb(b"raw"), "application/x-msgpack", "unreadable msgpack"),  # bin: no JSON form
        (msgpack.packb({1: 2}), "application/msgpack", "unreadable msgpack"),
        (msgpack.packb(1) + b"\x01", "application/msgpack", "unreadable msgpack"),  # trailing data
    ],
)
def test_decode_body_refuses(body: bytes, content_type: str | None, expected: str) -> None:
    exc = refused("unreadable", decode_body, body, content_type)
    assert exc.text.startswith(f"{content_type.split(';')[0] if content_type else 'no content type'} body: ")
    assert expected in exc.text


@settings(max_examples=400)
@given(
    body=st.binary(max_size=64) | st.text(max_size=40).map(str.encode),
    content_type=st.sampled_from([None, "application/json", "application/msgpack", "text/plain", "x/y"]),
)
def test_decode_body_answers_or_refuses_never_crashes(body: bytes, content_type: str | None) -> None:
    try:
        json_text, value = decode_body(body, content_type)
    except Refused as exc:
        refusal = exc
    else:
        assert loads_json(json_text) == value  # what the hub takes, every client can read
        return
    assert refusal.kind == "unreadable"


# ------------------------------------------------------------------ a publisher's message


def test_read_publish() -> None:
    props = raw.properties(content_type=b"application/json", message_id=b"m-1", headers=_ts_table(NOW - 10))
    publish = read_publish("user.42", content_header(props), b'{"a": 1}', now=NOW)
    assert publish == wire.Publish("user.42", "m-1", NOW - 10, '{"a": 1}', {"a": 1})


def test_read_publish_without_id_or_ts() -> None:
    publish = read_publish("broadcast", content_header(raw.properties()), b"hi", now=NOW)
    assert (publish.topic, publish.ts, publish.data) == ("broadcast", NOW, "hi")
    assert len(publish.id) == 32


@pytest.mark.parametrize(
    ("routing_key", "props", "body", "kind", "expected"),
    [
        ("user.1", raw.properties(message_id=b"\xff\xfe"), b"1", "bad-properties", "message_id: not UTF-8"),
        ("user.1", raw.properties(headers=raw.nested_table(100)), b"1", "bad-properties", "nested deeper"),
        ("user.1", raw.properties(message_id=b"a\x00b"), b"1", "bad-properties", "without control characters"),
        ("user.a*b", raw.properties(), b"1", "invalid-topic", "routing key: expected a topic"),
        ("user.\udcff", raw.properties(), b"1", "invalid-topic", "routing key: expected a topic"),
        (None, raw.properties(), b"1", "invalid-topic", "routing key: expected a topic"),
        ("user.1", raw.properties(content_type=b"application/json"), b"{", "unreadable", "unreadable JSON"),
        ("user.1", raw.properties(), b"[" * (wire.MAX_BODY_BYTES + 1), "too-large", "at most 1048576 bytes"),
    ],
)
def test_read_publish_refuses(routing_key: str | None, props: bytes, body: bytes, kind: str, expected: str) -> None:
    assert expected in refused(kind, read_publish, routing_key, content_header(props), body, now=NOW).text


def test_a_body_of_exactly_the_limit_is_taken() -> None:
    body = b'"' + b"x" * (wire.MAX_BODY_BYTES - 2) + b'"'
    assert len(read_publish("user.1", content_header(raw.properties()), body, now=NOW).data) == len(body) - 2


def test_bad_properties_come_before_a_bad_routing_key() -> None:
    refused("bad-properties", read_publish, "a*", content_header(raw.properties(app_id=b"\xff")), b"1", now=NOW)


def _ts_table(ts: int) -> bytes:
    return raw.table({b"ts": b"l" + struct.pack(">q", ts)})


# ------------------------------------------------------------------ the live frame


def test_json_frame_and_parse_live_agree() -> None:
    data = {"text": "é\u2028", "deep": nested(MAX_DEPTH - 1)}
    data_json = json.dumps(data)
    text = wire.json_frame('id "1"', "user.42", "17-3", NOW, data_json)
    assert json.loads(text) == {
        "type": "notification",
        "id": 'id "1"',
        "topic": "user.42",
        "offset": "17-3",
        "ts": NOW,
        "data": data,
    }
    live = parse_live(text.encode())
    assert (live.id, live.topic, live.offset, live.ts, live.data) == ('id "1"', "user.42", "17-3", NOW, data)
    assert live.frame(JSON) == text
    assert msgpack.unpackb(live.frame(MSGPACK)) == json.loads(text)


def test_a_payload_at_the_depth_limit_still_fits_its_frame() -> None:
    data = nested(MAX_DEPTH)  # the frame around it is one level deeper
    live = parse_live(wire.json_frame("i", "t", "1-0", NOW, json.dumps(data)).encode())
    assert live.data == data


def _frame(**changes: Any) -> bytes:
    frame: dict[str, Any] = {"type": "notification", "id": "i", "topic": "t", "offset": "1-0", "ts": NOW, "data": 1}
    frame.update(changes)
    return json.dumps({k: v for k, v in frame.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",
        b"[]",
        b"{",
        _frame(type="ping"),
        _frame(data=...),
        _frame(id=...),
        _frame(id=5),
        _frame(ts="1"),
        _frame(ts=...),
        _frame(topic="a*"),
        _frame(offset="x"),
        _frame(data=math.nan),
        _frame(data="\ud800"),
        _frame(id="\udc00"),
        _frame(data=nested(MAX_DEPTH + 1)),
        b'{"type":"notification","id":"i","topic":"t","ts":1,"data":' + deep_json(5000).encode() + b"}",
    ],
)
def test_parse_live_refuses_what_a_socket_could_not_send(body: bytes) -> None:
    refused("unreadable", parse_live, body)


@pytest.mark.parametrize(
    "data_json", ["18446744073709551616", "-9223372036854775809", "1e400", "-1E+999", "1" + "0" * 400 + ".0"]
)
def test_parse_live_refuses_numbers_a_msgpack_socket_could_not_carry(data_json: str) -> None:
    refused("unreadable", parse_live, wire.json_frame("i", "t", "1-0", NOW, data_json).encode())


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8", exclude_categories=[]) | st.sampled_from(["\ud800", "\udfff"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=500)
@given(_json_values)
def test_parse_live_takes_exactly_what_check_takes(data: Any) -> None:
    """The live path refuses exactly what a publisher's path refuses."""
    text = wire.json_frame("i", "t", "1-0", NOW, json.dumps(data)).encode()
    try:
        check(data)
    except ValueError:
        refused("unreadable", parse_live, text)
    else:
        assert parse_live(text).data == json.loads(json.dumps(data))


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_parse_live_never_crashes(body: bytes) -> None:
    with contextlib.suppress(Refused):
        parse_live(body)


# ------------------------------------------------------------------ presence and dead letters


def test_presence_event() -> None:
    key, body = wire.presence_event("u-1", True)
    assert key == "presence.online.u-1"
    assert json.loads(body) == {"user": "u-1", "online": True}
    assert wire.PRESENCE_PROPERTIES.content_type == "application/json"
    assert wire.PRESENCE_PROPERTIES.delivery_mode == 2
    key, body = wire.presence_event("u-1", False)
    assert (key, json.loads(body)) == ("presence.offline.u-1", {"user": "u-1", "online": False})


def test_dead_letter_properties_are_encodable_for_any_client() -> None:
    table = raw.table(
        {
            b"\xff": b"t\x01",
            b"bytes": b"S" + raw.long_str(b"\xfe"),
            b"dec": b"D\x00" + struct.pack(">I", 2**32 - 1),  # pamqp cannot encode this one back
            b"deep": raw.nested_table(5)[0:0] + b"F" + raw.nested_table(5),
            b"ts": b"l" + struct.pack(">q", NOW),
            b"x-hub-reason": b"S" + raw.long_str(b"an old reason"),
        }
    )
    props = raw.properties(
        content_type=b"application/\xff",
        message_id=b"\xff" * 255,
        headers=table,
        user_id=b"someone",
        expiration=b"60000",
        app_id=b"app",
    )
    dead = wire.dead_letter_properties(content_header(props), "user.\udcff", "bad-properties", "message_id: not UTF-8")
    frame = pamqp.frame.marshal(header.ContentHeader(body_size=0, properties=dead), 1)
    # read back with pamqp's own (strict) decoding, as any other client would
    strict = header.ContentHeader()
    strict.unmarshal(frame[7:-1])
    properties: commands.Basic.Properties = strict.properties
    assert properties.headers is not None
    assert properties.headers["x-hub-reason"] == "bad-properties: message_id: not UTF-8"
    assert properties.headers["x-hub-routing-key"] == "user.\\xff"
    assert properties.headers["\\xff"] is True
    assert properties.headers["bytes"] == "\\xfe"
    assert properties.headers["dec"] == "4294967295"
    assert properties.headers["ts"] == NOW
    assert properties.content_type == "application/\\xff"
    assert properties.message_id is not None
    assert properties.message_id.startswith("\\xff\\xff")
    assert len(properties.message_id.encode()) <= 255
    assert properties.app_id == "app"
    assert properties.delivery_mode == 2
    assert properties.user_id is None  # RabbitMQ refuses a user_id other than the publisher's
    assert properties.expiration is None  # a dead letter stays until someone looks at it


def test_reasons_are_documented() -> None:
    with open("docs/protocol.md", encoding="utf-8") as file:
        protocol = file.read()
    for reason in wire.REASONS:
        assert f"`{reason}`" in protocol, reason


def test_the_dead_letter_of_a_message_with_huge_headers_reads_back_whole() -> None:
    wide = raw.table({b"%d" % i: b"V" for i in range(amqp_decode.MAX_FIELDS + 500)})
    original = content_header(raw.properties(headers=wide))
    assert problems(original)
    dead = wire.dead_letter_properties(original, "user.1", "bad-properties", "; ".join(problems(original)))
    frame = pamqp.frame.marshal(header.ContentHeader(body_size=0, properties=dead), 1)
    again = amqp_decode.unmarshal_header(frame[7:-1])
    assert problems(again) == ()
    assert again.properties.headers == {
        "x-hub-reason": f"bad-properties: headers: more than {amqp_decode.MAX_FIELDS} fields",
        "x-hub-routing-key": "user.1",
    }
