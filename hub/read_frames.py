"""The ``read`` frame and its trip to every socket of a user (docs/protocol.md §9).

A change of read state is told to every socket of the user, on every replica, through
the live path the sockets already consume: a ``ReadEvent`` is a ``Notification`` whose
frame is the ``read`` frame, so the session's delivery pump writes it in order with
the notifications, and needs no change. It is routed by ``read_key(user)``
(``~read.<id>``): each socket of the user binds that key, and since ``~`` is not a
topic character no token can grant it, so another user's socket (even one granted
``user.<id>`` as an extra topic) never gets it.

On the distributed backend the event crosses RabbitMQ as a JSON body (``event_body``),
read back strictly by ``parse_event`` (called from ``hub.wire.parse_live``).
"""

from __future__ import annotations

from typing import Any, Final

from hub.backends.base import ReadState
from hub.notification import Notification, now_ms
from hub.payload import dumps_json
from hub.protocol import Codec, Wire
from hub.topics import Offset, validate_topic, validate_user_id

#: The live routing key prefix of read events (``~`` is not a topic character, §2).
READ_KEY_PREFIX: Final = "~read."
#: An event never carries more marks than a topic retains; this bounds what a peer may send.
MAX_EVENT_OFFSETS: Final = 100_000


def read_key(user: str) -> str:
    """The live routing key every socket of ``user`` binds to hear its read changes."""
    return READ_KEY_PREFIX + user


def read_frame(state: ReadState) -> dict[str, Any]:
    """The ``read`` frame sent to a socket (§9)."""
    return {
        "type": "read",
        "topic": state.topic,
        "up_to": state.up_to,
        "offsets": list(state.offsets),
        "unread": state.unread,
    }


class ReadEvent(Notification):
    """A change of read state on its way to sockets: writes the ``read`` frame, has no offset
    (the delivery cursor lets it through without moving), and is never stored."""

    __slots__ = ("state", "user")

    def __init__(self, user: str, state: ReadState, ts: int | None = None) -> None:
        super().__init__(id="read", topic=state.topic, offset=None, ts=now_ms() if ts is None else ts, data=None)
        self.user = user
        self.state = state

    def as_frame(self) -> dict[str, Any]:
        return read_frame(self.state)

    def frame(self, codec: Codec) -> Wire:
        wire = self._frames.get(codec.name)
        if wire is None:
            wire = self._frames[codec.name] = codec.encode(self.as_frame())
        return wire

    def __repr__(self) -> str:
        return f"ReadEvent(user={self.user!r}, state={self.state!r})"


def event_body(event: ReadEvent) -> bytes:
    """The event as a live message body (JSON; ``parse_event`` reads it back)."""
    return dumps_json({**read_frame(event.state), "user": event.user, "ts": event.ts}).encode()


def parse_event(frame: dict[str, Any]) -> ReadEvent:
    """A decoded live ``read`` body as an event; ValueError with the reason for anything else
    (anyone allowed to publish on the live exchange can send anything)."""
    user = validate_user_id(frame.get("user"))
    topic = validate_topic(frame.get("topic"))
    up_to = str(Offset.parse(frame.get("up_to")))
    offsets, unread, ts = frame.get("offsets"), frame.get("unread"), frame.get("ts")
    if type(offsets) is not list or len(offsets) > MAX_EVENT_OFFSETS:
        raise ValueError(f"expected 'offsets' to be a list of at most {MAX_EVENT_OFFSETS} offsets")
    if type(unread) is not int or unread < 0 or type(ts) is not int:
        raise ValueError(f"expected a count 'unread' and an integer 'ts', got {unread!r:.40} and {ts!r:.40}")
    marks = tuple(str(Offset.parse(offset)) for offset in offsets)
    return ReadEvent(user, ReadState(topic, up_to, marks, unread), ts)
