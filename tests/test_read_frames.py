"""The ``read`` frames without I/O (docs/protocol.md §9): the client frame's parsing, the
event that crosses RabbitMQ (built by ``event_body``, read back by ``wire.parse_live``)."""

from __future__ import annotations

import json

import msgpack
import pytest

from hub.backends.base import ReadState
from hub.codes import CloseCode
from hub.protocol import JSON, MAX_READ_OFFSETS, MSGPACK, ProtocolError, Read, parse_client_frame
from hub.read_frames import ReadEvent, event_body, read_frame, read_key
from hub.topics import Offset
from hub.wire import Refused, parse_live


def test_read_frame_parses_cursor_and_marks() -> None:
    frame = parse_client_frame(JSON, '{"type":"read","topic":"user.1","up_to":"5-0","offsets":["7-1","007-2"]}')
    assert frame == Read("user.1", Offset(5, 0), (Offset(7, 1), Offset(7, 2)))
    packed = msgpack.packb({"type": "read", "topic": "team.7", "offsets": ["1-0"]})
    assert parse_client_frame(MSGPACK, packed) == Read("team.7", None, (Offset(1, 0),))


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "read", "topic": "user.1"},
        {"type": "read", "topic": "user.1", "offsets": []},
        {"type": "read", "topic": "user.#", "up_to": "1-0"},
        {"type": "read", "up_to": "1-0"},
        {"type": "read", "topic": "user.1", "up_to": 5},
        {"type": "read", "topic": "user.1", "offsets": {"a": "1-0"}},
        {"type": "read", "topic": "user.1", "offsets": ["1-0"] * (MAX_READ_OFFSETS + 1)},
        {"type": "read", "topic": "user.1", "offsets": [f"{2**64}-0"]},
    ],
)
def test_bad_read_frames_are_protocol_errors(frame: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_client_frame(JSON, json.dumps(frame))
    assert refused.value.code == CloseCode.PROTOCOL_ERROR


def test_event_crosses_the_live_path_and_encodes_once_per_codec() -> None:
    state = ReadState("user.9", "5-0", ("6-1", "8-0"), 3)
    event = ReadEvent("9", state, ts=1_700_000_000_000)
    back = parse_live(event_body(event))
    assert isinstance(back, ReadEvent)
    assert (back.user, back.state, back.ts, back.offset) == ("9", state, event.ts, None)
    assert (
        json.loads(back.frame(JSON))
        == read_frame(state)
        == {
            "type": "read",
            "topic": "user.9",
            "up_to": "5-0",
            "offsets": ["6-1", "8-0"],
            "unread": 3,
        }
    )
    assert back.frame(JSON) is back.frame(JSON)
    assert msgpack.unpackb(back.frame(MSGPACK)) == read_frame(state)
    assert read_key("9") == "~read.9"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "read", "user": "9", "topic": "user.9", "up_to": "5-0", "offsets": [], "unread": -1, "ts": 1},
        {"type": "read", "user": "9.1", "topic": "user.9", "up_to": "5-0", "offsets": [], "unread": 0, "ts": 1},
        {"type": "read", "user": "9", "topic": "user.9", "up_to": "x", "offsets": [], "unread": 0, "ts": 1},
        {"type": "read", "user": "9", "topic": "user.9", "up_to": "5-0", "offsets": ["y"], "unread": 0, "ts": 1},
        {"type": "read", "user": "9", "topic": "user.9", "up_to": "5-0", "offsets": "z", "unread": 0, "ts": 1},
        {"type": "read", "user": "9", "topic": "user.9", "up_to": "5-0", "offsets": [], "unread": True, "ts": 1},
        {"type": "read", "topic": "user.9", "up_to": "5-0", "offsets": [], "unread": 0, "ts": 1},
    ],
)
def test_a_bad_live_read_body_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(Refused) as refused:
        parse_live(json.dumps(body).encode())
    assert refused.value.kind == "unreadable"
