"""Everything that crosses AMQP, built and parsed in one place (docs/protocol.md §4-§6).

- In: a publisher's message (``read_publish`` reads any), its ``ts`` header
  (``parse_ts``) and body (``decode_body``: JSON, msgpack or text, strictly, with
  ``hub.payload``). Python publishers build theirs with ``build_message``, and every
  publish path checks ids and ttls with ``validate_message_id`` / ``validate_ttl``:
  those are the publish helper's (``hubnotify.message``), re-exported here.
- Out: the live message (``json_frame``, ``LIVE_PROPERTIES``; ``parse_live`` reads it
  back), the presence event (``presence_event``, ``PRESENCE_PROPERTIES``) and the dead letter
  (``dead_letter_properties``).

A message the hub cannot take raises ``Refused`` with a reason kind (``REASONS``) and
a text saying what was expected and what came; the sequencer dead-letters it with both
in ``x-hub-reason``. The live frame is built by splicing the payload's JSON text into the
``notification`` frame, so a JSON payload is parsed once (to check it), never re-encoded.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from pamqp import encode
from pamqp.commands import Basic
from pamqp.common import FieldTable

from hub.amqp_decode import MAX_DEPTH as MAX_HEADER_DEPTH
from hub.amqp_decode import MAX_FIELDS as MAX_HEADER_FIELDS
from hub.amqp_decode import problems
from hub.notification import Notification, new_id
from hub.payload import BadPayload, check, dumps_json, loads_json, loads_msgpack
from hub.protocol import JSON, Codec, Wire
from hub.read_frames import parse_event
from hub.topics import InvalidTopic, parse_offset, validate_topic

# The publish helper's message (one definition, hubnotify.message), re-exported.
from hubnotify.message import JSON_TYPE as JSON_TYPE
from hubnotify.message import MAX_ID_BYTES as MAX_ID_BYTES
from hubnotify.message import MAX_PRIORITY as MAX_PRIORITY
from hubnotify.message import MAX_TTL_SECONDS as MAX_TTL_SECONDS
from hubnotify.message import TS_HEADER as TS_HEADER
from hubnotify.message import build_message as build_message
from hubnotify.message import validate_message_id as validate_message_id
from hubnotify.message import validate_priority as validate_priority
from hubnotify.message import validate_ttl as validate_ttl

#: The largest body the hub takes, as over HTTP (hub/app.py): a notification, not a file.
MAX_BODY_BYTES: Final = 1_048_576
#: ``ts`` headers outside [2000-01-01, now + a day] are replaced by the time of arrival.
MIN_TS: Final = 946_684_800_000
MAX_TS_AHEAD_MS: Final = 86_400_000

REASON_HEADER: Final = "x-hub-reason"
ROUTING_KEY_HEADER: Final = "x-hub-routing-key"
#: Why a message is dead-lettered: the first word of its ``x-hub-reason`` (docs/protocol.md §5).
REASONS: Final = ("bad-properties", "invalid-topic", "too-large", "unreadable", "delivery-limit", "unexpected")

MSGPACK_TYPES: Final = frozenset({"application/msgpack", "application/x-msgpack"})
LIVE_PROPERTIES: Final = Basic.Properties(content_type=JSON_TYPE, delivery_mode=1)


class Refused(ValueError):
    """A message the hub cannot take; ``kind`` is one of ``REASONS``."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(f"{kind}: {text}")
        self.kind = kind
        self.text = text


# ------------------------------------------------------------------ publishing


def parse_ts(headers: object, now: int) -> int:
    """The ``ts`` header in ms when it is an integer (not a bool) in a sane range, else ``now``."""
    ts = headers.get(TS_HEADER) if isinstance(headers, dict) else None
    if type(ts) is int and MIN_TS <= ts <= now + MAX_TS_AHEAD_MS:
        return ts
    return now


def decode_body(body: bytes, content_type: str | None) -> tuple[str, Any]:
    """A publisher's body as ``(json_text, value)``; raises Refused("unreadable") when it
    cannot be carried (docs/protocol.md §4).

    ``application/json`` (or ``application/*+json``): strict JSON, else refused.
    ``application/msgpack``, ``application/x-msgpack``: strict msgpack, else refused.
    No content type: JSON when the body is JSON syntax (then strictly: NaN, lone
    surrogates or nesting past ``hub.payload.MAX_DEPTH`` are refused), else the text as a string.
    Any other type: the text as a string. Text must be UTF-8.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        if kind in MSGPACK_TYPES:
            value = loads_msgpack(body)
            return dumps_json(value), value
        text = body.decode("utf-8")
        if kind == JSON_TYPE or (kind.startswith("application/") and kind.endswith("+json")):
            return text, loads_json(text)
        if not kind:
            try:
                return text, loads_json(text)
            except BadPayload:
                if _json_syntax(text):
                    raise
        return dumps_json(text), text
    except (BadPayload, UnicodeDecodeError) as exc:
        raise Refused("unreadable", f"{kind or 'no content type'} body: {exc}") from None


def _json_syntax(text: str) -> bool:
    """Whether ``text`` is JSON at all, with non-finite numbers and any depth allowed."""
    try:
        json.loads(text)
    except RecursionError:
        return True  # brackets deeper than the stack: JSON, just too deep
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Publish:
    """A publisher's message the hub takes: where it goes and what it says."""

    topic: str
    id: str
    ts: int
    data_json: str
    data: Any
    #: AMQP ``priority`` as published, capped at ``MAX_PRIORITY`` (RabbitMQ caps it too).
    priority: int = 0


def read_publish(routing_key: str | None, header: Any, body: bytes, *, now: int) -> Publish:
    """Read a message published to ``notifications``; raises Refused with the first reason.

    ``header`` is the message's content header (aiormq's ``DeliveredMessage.header``).
    """
    properties = header.properties
    undecodable = problems(header)
    if undecodable:
        raise Refused("bad-properties", "; ".join(undecodable))
    try:
        topic = validate_topic(routing_key)
    except InvalidTopic as exc:
        raise Refused("invalid-topic", f"routing key: {exc}") from None
    try:
        id = new_id() if not properties.message_id else validate_message_id(properties.message_id)
    except ValueError as exc:
        raise Refused("bad-properties", f"message_id: {exc}") from None
    if len(body) > MAX_BODY_BYTES:
        raise Refused("too-large", f"expected a body of at most {MAX_BODY_BYTES} bytes, got {len(body)}")
    data_json, data = decode_body(body, properties.content_type)
    priority = min(properties.priority or 0, MAX_PRIORITY) if type(properties.priority) is int else 0
    return Publish(topic, id, parse_ts(properties.headers, now), data_json, data, priority)


# ------------------------------------------------------------------ the live path


def json_frame(id: str, topic: str, offset: str | None, ts: int, data_json: str) -> str:
    """The ``notification`` frame in JSON, with the payload's JSON text spliced in as ``data``.

    Same fields and order as ``Notification.as_frame``; ``topic`` and ``offset`` are
    validated by the caller, so only ``id`` needs escaping.
    """
    if offset is None:
        return f'{{"type":"notification","id":{dumps_json(id)},"topic":"{topic}","ts":{ts},"data":{data_json}}}'
    return (
        f'{{"type":"notification","id":{dumps_json(id)},"topic":"{topic}",'
        f'"offset":"{offset}","ts":{ts},"data":{data_json}}}'
    )


class LiveNotification(Notification):
    """A notification that arrived with its JSON frame ready: JSON sockets get it as is."""

    __slots__ = ("_json",)

    def __init__(self, *, id: str, topic: str, offset: str | None, ts: int, data: Any, json_text: str) -> None:
        super().__init__(id=id, topic=topic, offset=offset, ts=ts, data=data)
        self._json = json_text

    def frame(self, codec: Codec) -> Wire:
        if codec is JSON:
            return self._json
        return super().frame(codec)


def _no_constant(name: str) -> Any:
    raise ValueError(f"expected finite numbers, got {name}")


_live_decoder = json.JSONDecoder(parse_constant=_no_constant)


def parse_live(body: bytes) -> Notification:
    """A live body (a ``notification`` frame built by ``json_frame``, or a read change built by
    ``hub.read_frames.event_body``) as a notification.

    Strict, since anyone allowed to publish on the live exchange can send anything: raises
    Refused("unreadable") for anything but a frame a socket can be sent as it is.
    """
    try:
        text = body.decode("utf-8")
        frame = _live_decoder.decode(text)
        if type(frame) is dict and frame.get("type") == "read":
            return parse_event(frame)  # a read change for every socket of a user (hub/read_frames.py)
        if type(frame) is not dict or frame.get("type") != "notification" or "data" not in frame:
            raise ValueError("expected a notification frame")
        id, topic, offset, ts = frame.get("id"), frame.get("topic"), frame.get("offset"), frame.get("ts")
        if type(id) is not str or type(ts) is not int:
            raise ValueError(f"expected a string id and an integer ts, got {id!r:.40} and {ts!r:.40}")
        topic = validate_topic(topic)
        if offset is not None:
            parse_offset(offset)
        check(id)
        check(frame["data"])  # a walk costs about as much as a pre-scan that would skip it
    except (ValueError, RecursionError) as exc:  # BadPayload and InvalidTopic are ValueErrors
        raise Refused("unreadable", f"live message: {exc}") from None
    return LiveNotification(id=id, topic=topic, offset=offset, ts=ts, data=frame["data"], json_text=text)


#: A presence event's properties (docs/protocol.md §6).
PRESENCE_PROPERTIES: Final = Basic.Properties(content_type=JSON_TYPE, delivery_mode=2)
#: A read event's properties (docs/protocol.md §9): transient, like the live messages it goes with.
READ_PROPERTIES: Final = Basic.Properties(content_type=JSON_TYPE)


def presence_event(user: str, online: bool) -> tuple[str, bytes]:
    """The routing key and body of a presence change (docs/protocol.md §6), sent with
    ``PRESENCE_PROPERTIES``."""
    kind = "online" if online else "offline"
    return f"presence.{kind}.{user}", dumps_json({"user": user, "online": online}).encode()


# ------------------------------------------------------------------ dead letters


def dead_letter_properties(header: Any, routing_key: str | None, kind: str, text: str) -> Basic.Properties:
    """The properties of a message's copy in the dead-letter queue (docs/protocol.md §5).

    The original's, made encodable for any client (text that was not UTF-8 is shown with
    backslash escapes, values AMQP cannot carry back become text), plus
    ``x-hub-reason: <kind>: <text>`` and ``x-hub-routing-key``; persistent, no expiration,
    and no ``user_id`` (RabbitMQ refuses one that is not the hub's own user).
    """
    original = header.properties
    headers = _printable_headers(original.headers)
    headers[REASON_HEADER] = _printable(f"{kind}: {text}")[:1000]
    headers[ROUTING_KEY_HEADER] = _printable(routing_key or "")
    timestamp = original.timestamp
    return Basic.Properties(
        content_type=_short(original.content_type),
        content_encoding=_short(original.content_encoding),
        headers=headers,
        delivery_mode=2,
        correlation_id=_short(original.correlation_id),
        message_id=_short(original.message_id),
        timestamp=timestamp if isinstance(timestamp, datetime.datetime) else None,
        message_type=_short(original.message_type),
        app_id=_short(original.app_id),
    )


def _printable(text: str) -> str:
    """``text`` with the bytes that were not UTF-8 (decoded with surrogateescape) as ``\\xNN``."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _short(text: object) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    return _printable(text).encode("utf-8")[:MAX_ID_BYTES].decode("utf-8", "ignore")


def _printable_headers(headers: object) -> FieldTable:
    """The original headers made encodable; none when they cannot be encoded back, or would
    not fit with the hub's own in the fields ``hub.amqp_decode`` reads (the dead letter must
    read back whole, reason included)."""
    if not isinstance(headers, dict) or _fields(headers) > MAX_HEADER_FIELDS - 2:
        return {}
    table = _printable_table(headers, 1)
    try:
        encode.field_table(table)
    except Exception:  # whatever pamqp cannot encode back: keep only the hub's headers
        return {}
    return table


def _fields(table: dict[Any, Any]) -> int:
    count = 0
    stack: list[dict[Any, Any] | list[Any]] = [table]
    while stack:
        items = stack.pop()
        values = items.values() if isinstance(items, dict) else items
        for value in values:
            count += 1
            if isinstance(value, dict | list):
                stack.append(value)
    return count


def _printable_value(value: object, depth: int) -> Any:
    if isinstance(value, str):
        return _printable(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict | list) and depth >= MAX_HEADER_DEPTH:
        return "…"
    if isinstance(value, dict):
        return _printable_table(value, depth + 1)
    if isinstance(value, list):
        return [_printable_value(item, depth + 1) for item in value]
    if isinstance(value, Decimal):
        return str(value)  # pamqp cannot always encode back what it decoded
    return value


def _printable_table(table: dict[Any, Any], depth: int) -> FieldTable:
    return {_printable(str(key))[:128]: _printable_value(value, depth) for key, value in table.items()}
