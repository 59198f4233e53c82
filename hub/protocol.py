"""WebSocket protocol v1, without I/O: frames, the JSON and msgpack codecs, validation.

Bytes or text in, typed frames out; typed frames in, bytes or text out. Nothing here
touches a socket or an event loop, so every malformed case is testable directly
(the approach of python-websockets' sans-I/O core). Client frames are parsed strictly
by hub/payload.py (bounded nesting, no NaN, no lone surrogates): whatever a client
sends is answered with a close code (docs/protocol.md §3, §8), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from hub.codes import CloseCode
from hub.payload import BadPayload, dumps_json, loads_json, loads_msgpack
from hub.topics import InvalidTopic, Offset, validate_topic

JSON_SUBPROTOCOL: Final = "hub.v1.json"
MSGPACK_SUBPROTOCOL: Final = "hub.v1.msgpack"
SUBPROTOCOLS: Final = (JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL)

MAX_TOKEN_LENGTH: Final = 8192
MAX_SINCE_TOPICS: Final = 64
#: The most offsets one ``read`` frame may mark (docs/protocol.md §9); more is a protocol error.
MAX_READ_OFFSETS: Final = 100

Wire = str | bytes

#: Compact UTF-8 JSON (``hub.payload.dumps_json``), kept under this name for importers.
json_dumps = dumps_json


class ProtocolError(Exception):
    """A frame the hub refuses; ``code`` is the close code to answer with."""

    def __init__(self, message: str, code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------- codecs


class Codec:
    """Encodes and decodes frame maps for one subprotocol."""

    name: str
    binary: bool

    def encode(self, frame: dict[str, Any]) -> Wire:
        """Serialize one frame map."""
        raise NotImplementedError

    def decode(self, data: Wire) -> dict[str, Any]:
        """Parse one frame into a map, or raise ProtocolError."""
        raise NotImplementedError


class JsonCodec(Codec):
    """``hub.v1.json``: text frames holding a JSON object."""

    name = JSON_SUBPROTOCOL
    binary = False

    def encode(self, frame: dict[str, Any]) -> Wire:
        return dumps_json(frame)

    def decode(self, data: Wire) -> dict[str, Any]:
        if not isinstance(data, str):
            raise ProtocolError("expected a text frame on hub.v1.json, got a binary frame")
        try:
            value = loads_json(data)
        except BadPayload as exc:
            raise ProtocolError(f"expected a JSON object, got unreadable JSON ({exc})") from None
        return _as_map(value)


class MsgpackCodec(Codec):
    """``hub.v1.msgpack``: binary frames holding a msgpack map."""

    name = MSGPACK_SUBPROTOCOL
    binary = True

    def encode(self, frame: dict[str, Any]) -> Wire:
        return msgpack.packb(frame, use_bin_type=True)

    def decode(self, data: Wire) -> dict[str, Any]:
        if not isinstance(data, bytes):
            raise ProtocolError("expected a binary frame on hub.v1.msgpack, got a text frame")
        try:
            value = loads_msgpack(data)
        except BadPayload as exc:
            raise ProtocolError(f"expected a msgpack map, got unreadable msgpack ({exc})") from None
        return _as_map(value)


JSON: Final = JsonCodec()
MSGPACK: Final = MsgpackCodec()
CODECS: Final[dict[str, Codec]] = {JSON.name: JSON, MSGPACK.name: MSGPACK}


def choose_codec(offered: list[str]) -> Codec | None:
    """The codec for a client's ``Sec-WebSocket-Protocol`` list (JSON when none is offered).

    Returns None when the client offered subprotocols but none of ours: the upgrade
    must then be refused.
    """
    if not offered:
        return JSON
    for name in offered:
        codec = CODECS.get(name)
        if codec is not None:
            return codec
    return None


def _as_map(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a frame map, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------- client frames


@dataclass(frozen=True, slots=True)
class Connect:
    """First frame of every connection."""

    token: str
    since: dict[str, Offset] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refresh:
    """Replace an expiring token without reconnecting."""

    token: str


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a ``ping``."""


@dataclass(frozen=True, slots=True)
class Read:
    """Mark notifications of ``topic`` read: everything up to ``up_to`` and/or single ``offsets`` (§9)."""

    topic: str
    up_to: Offset | None
    offsets: tuple[Offset, ...]


ClientFrame = Connect | Refresh | Pong | Read


def parse_client_frame(codec: Codec, data: Wire) -> ClientFrame:
    """Decode and validate one client frame, or raise ProtocolError with the close code to use."""
    frame = codec.decode(data)
    kind = frame.get("type")
    if kind == "pong":
        return Pong()
    if kind == "connect":
        return Connect(token=_token(frame), since=_since(frame.get("since")))
    if kind == "refresh":
        return Refresh(token=_token(frame))
    if kind == "read":
        return _read(frame)
    raise ProtocolError(f"expected a frame type of connect, refresh, pong or read, got {kind!r:.40}")


def _token(frame: dict[str, Any]) -> str:
    token = frame.get("token")
    if not isinstance(token, str) or not token:
        raise ProtocolError("expected a non-empty string 'token'", CloseCode.BAD_TOKEN)
    if len(token) > MAX_TOKEN_LENGTH:
        raise ProtocolError(f"expected a token of at most {MAX_TOKEN_LENGTH} characters", CloseCode.BAD_TOKEN)
    return token


def _since(value: object) -> dict[str, Offset]:
    """Each topic's offset, parsed (ASCII digits, parts below 2^64, §8); a bad one is 4002."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"expected 'since' to be a map of topic to offset, got {type(value).__name__}")
    if len(value) > MAX_SINCE_TOPICS:
        raise ProtocolError(f"expected at most {MAX_SINCE_TOPICS} topics in 'since', got {len(value)}")
    since: dict[str, Offset] = {}
    for topic, offset in value.items():
        try:
            since[validate_topic(topic)] = Offset.parse(offset)
        except InvalidTopic as exc:
            raise ProtocolError(f"bad 'since' entry: {exc}") from None
    return since


def _read(frame: dict[str, Any]) -> Read:
    """A ``read`` frame (§9): a valid topic, ``up_to`` and/or at most ``MAX_READ_OFFSETS``
    ``offsets``, each a valid offset; anything else is 4002 with the reason."""
    try:
        topic = validate_topic(frame.get("topic"))
        up_to = None if frame.get("up_to") is None else Offset.parse(frame["up_to"])
        offsets = frame.get("offsets")
        if offsets is None:
            offsets = []
        if not isinstance(offsets, list):
            raise ProtocolError(f"expected 'offsets' to be a list of offsets, got {type(offsets).__name__}")
        if len(offsets) > MAX_READ_OFFSETS:
            raise ProtocolError(f"expected at most {MAX_READ_OFFSETS} 'offsets' in a read frame, got {len(offsets)}")
        marks = tuple(Offset.parse(offset) for offset in offsets)
    except InvalidTopic as exc:
        raise ProtocolError(f"bad read frame: {exc}") from None
    if up_to is None and not marks:
        raise ProtocolError("expected 'up_to' or a non-empty 'offsets' in a read frame")
    return Read(topic, up_to, marks)


# ---------------------------------------------------------------------- server frames


def connected_frame(
    *,
    conn_id: str,
    user: str,
    topics: list[str],
    replica: str,
    ping_interval: float,
    recovered: bool,
    offsets: dict[str, str],
    unread: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The ``connected`` frame that accepts a connection; ``unread`` (§9) only when read state is kept."""
    frame: dict[str, Any] = {
        "type": "connected",
        "conn_id": conn_id,
        "user": user,
        "topics": topics,
        "replica": replica,
        "ping_interval": ping_interval,
        "recovered": recovered,
        "offsets": offsets,
    }
    if unread is not None:
        frame["unread"] = unread
    return frame


PING_FRAME: Final[dict[str, Any]] = {"type": "ping"}


def error_frame(code: CloseCode, message: str) -> dict[str, Any]:
    """The ``error`` frame sent before a close with a reason; ``code`` is the close code that follows."""
    return {"type": "error", "code": int(code), "message": message}
