"""Publisher bodies in, live message bodies out (DESIGN.md §4), without touching payloads twice.

A publisher's body is JSON (content type ``application/json`` or none), msgpack
(``application/msgpack``, ``application/x-msgpack``) or anything else, relayed as a
UTF-8 string. ``decode_body`` checks it once and keeps its bytes as they came; the
live frame is then built by splicing those bytes into the ``notification`` frame
(``json_frame``), so a JSON payload is parsed once (to check it) and never
re-encoded. Consumers turn a live body back into a ``Notification`` whose JSON frame
is the body itself (``LiveNotification``).
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgpack

from hub.notification import Notification
from hub.protocol import JSON, Codec, Wire, json_dumps

MSGPACK_TYPES: Final = frozenset({"application/msgpack", "application/x-msgpack"})
JSON_TYPES: Final = frozenset({"", "application/json"})
TEXT_PREFIX: Final = "text/"


class Unreadable(ValueError):
    """A body the hub cannot read; the message goes to the dead-letter queue with this reason."""


def decode_body(body: bytes, content_type: str | None) -> tuple[str, Any]:
    """The payload of a publisher's message as ``(json_text, value)``.

    ``json_text`` is the payload as JSON text: the body itself when it was JSON. Raises
    Unreadable when the body is msgpack that doesn't parse, holds values JSON can't carry
    (bytes, non-string keys), or is not UTF-8.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in MSGPACK_TYPES:
        try:
            value = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise Unreadable(f"expected a msgpack body ({kind}), got unreadable msgpack ({exc})") from None
        try:
            return json_dumps(value), value
        except (TypeError, ValueError) as exc:
            raise Unreadable(f"expected msgpack values that JSON can carry, got {exc}") from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(
            f"expected a JSON, msgpack or UTF-8 text body ({kind or 'no content type'}), got {exc}"
        ) from None
    if not kind.startswith(TEXT_PREFIX):
        try:
            return text, json.loads(text)
        except ValueError:
            pass  # not JSON: relayed as a string, as DESIGN.md §4 says
    return json_dumps(text), text


def json_frame(id: str, topic: str, offset: str | None, ts: int, data_json: str) -> str:
    """The ``notification`` frame in JSON, with the payload's JSON text spliced in as ``data``.

    Same fields and order as ``Notification.as_frame``; ``topic`` and ``offset`` are
    validated by the caller, so only ``id`` needs escaping.
    """
    if offset is None:
        return f'{{"type":"notification","id":{json_dumps(id)},"topic":"{topic}","ts":{ts},"data":{data_json}}}'
    return (
        f'{{"type":"notification","id":{json_dumps(id)},"topic":"{topic}",'
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


def parse_live(body: bytes) -> LiveNotification:
    """A live body (a JSON ``notification`` frame built by ``json_frame``) as a notification."""
    text = body.decode("utf-8")
    frame = json.loads(text)
    return LiveNotification(
        id=frame["id"],
        topic=frame["topic"],
        offset=frame.get("offset"),
        ts=frame["ts"],
        data=frame["data"],
        json_text=text,
    )
