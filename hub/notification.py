"""The notification as it travels from a publisher to every socket of a topic."""

from __future__ import annotations

from typing import Any

from hub.protocol import Codec, Wire
from hub.topics import Offset

# The publish helper's (one definition: it makes the ids and ts of what it publishes), re-exported.
from hubnotify.message import new_id as new_id
from hubnotify.message import now_ms as now_ms


class Notification:
    """One sequenced notification.

    ``offset`` is the topic's stream position (``<ms>-<seq>``), or None when history is
    off. The encoded ``notification`` frame is cached per codec, so fanning one
    notification out to many sockets encodes it once per codec, not once per socket
    (and its ``position`` is parsed once, not once per socket).
    """

    __slots__ = ("_frames", "_position", "data", "id", "offset", "topic", "ts")

    def __init__(self, *, id: str, topic: str, offset: str | None, ts: int, data: Any) -> None:
        self.id = id
        self.topic = topic
        self.offset = offset
        self.ts = ts
        self.data = data
        self._frames: dict[str, Wire] = {}
        self._position: Offset | None = None

    @property
    def position(self) -> Offset | None:
        """``offset`` parsed (cached); None when history is off."""
        position = self._position
        if position is None and self.offset is not None:
            position = self._position = Offset.parse(self.offset)
        return position

    def frame(self, codec: Codec) -> Wire:
        """The ``notification`` frame in ``codec``'s encoding (cached).

        Raises ValueError (or TypeError, OverflowError) when the data cannot be sent in
        that encoding: NaN, a lone surrogate (no UTF-8 for it), an integer msgpack cannot
        hold. Checked here, once, rather than failing at every socket's send.
        """
        wire = self._frames.get(codec.name)
        if wire is None:
            wire = codec.encode(self.as_frame())
            if isinstance(wire, str) and not wire.isascii():
                wire.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate
            self._frames[codec.name] = wire
        return wire

    def as_frame(self) -> dict[str, Any]:
        """The ``notification`` frame as a map; ``offset`` is left out when history is off."""
        frame: dict[str, Any] = {"type": "notification", "id": self.id, "topic": self.topic}
        if self.offset is not None:
            frame["offset"] = self.offset
        frame["ts"] = self.ts
        frame["data"] = self.data
        return frame

    def __repr__(self) -> str:
        return f"Notification(id={self.id!r}, topic={self.topic!r}, offset={self.offset!r})"
