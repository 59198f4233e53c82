"""Where one connection stands in each topic's stream (docs/protocol.md §5, §8).

A pure unit: no I/O, no clock, no event loop. The session asks it three things:

- where each topic starts (``Cursor.start``): a topic without ``since`` at its latest
  offset; a topic with ``since`` just after it, unless that offset is in the future
  (beyond the topic's latest one: made up, or from a history that was lost), in which
  case it is clamped to the latest offset and the connection is not ``recovered``;
- whether a notification is new (``Cursor.admit``): offsets only grow per topic, so
  replay, back-fill and live delivery can overlap without a duplicate reaching the
  socket;
- where to back-fill from after a live gap (``Cursor.positions``).

Positions are ``Offset`` values (hub/topics.py); the wire form appears only at the
edges (``offsets`` for the ``connected`` frame, ``positions`` for a history read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hub.backends.base import HistoryRead
from hub.notification import Notification
from hub.topics import ZERO, Offset


@dataclass(frozen=True, slots=True)
class Start:
    """How a connection starts: what history to replay, and what could not be resumed.

    ``read_after`` maps each topic with a usable ``since`` to the offset history must be
    read after; ``clamped`` names the topics whose ``since`` was in the future.
    """

    read_after: dict[str, str]
    clamped: frozenset[str]

    def recovered(self, reads: Mapping[str, HistoryRead]) -> bool:
        """True when every ``since`` was resumed without a gap (the ``connected`` frame's flag)."""
        return not self.clamped and all(read.complete for read in reads.values())


class Cursor:
    """The offset last delivered (or resumed from) per topic of one connection."""

    __slots__ = ("_positions",)

    def __init__(self) -> None:
        self._positions: dict[str, Offset] = {}

    def start(self, topics: Sequence[str], since: Mapping[str, Offset], latest: Mapping[str, Offset]) -> Start:
        """Place every topic of the connection; ``latest`` must hold each topic's newest offset.

        ``since`` names only topics of ``topics`` (the session checks that first). Called
        once the live subscription exists: whatever is newer than a topic's latest offset
        then arrives live, so a clamped topic loses nothing from the moment of the connect.
        """
        read_after: dict[str, str] = {}
        clamped: set[str] = set()
        for topic in topics:
            newest = latest.get(topic, ZERO)
            resume = since.get(topic)
            if resume is None:
                self._positions[topic] = newest
            elif resume > newest:
                clamped.add(topic)
                self._positions[topic] = newest
            else:
                self._positions[topic] = resume
                read_after[topic] = str(resume)
        return Start(read_after, frozenset(clamped))

    def replay(self, reads: Mapping[str, HistoryRead]) -> list[Notification]:
        """The notifications of ``reads`` to send, in order, with the positions moved past them.

        A read whose ``since`` this history never issued (``HistoryRead.latest``: another
        site's offset, docs/operations.md §7) replays nothing and places the topic at the
        history's latest offset instead: the foreign offset must not be what later
        notifications are compared with.
        """
        for topic, read in reads.items():
            if read.latest is not None:
                self._positions[topic] = Offset.parse(read.latest)
        return [n for read in reads.values() for n in read.notifications if self.admit(n.topic, n.position)]

    def admit(self, topic: str, position: Offset | None) -> bool:
        """True when a notification at ``position`` is new for ``topic`` (and move past it).

        False for a duplicate: an offset at or below the topic's position. Without an
        offset (history off) every notification is new: there is nothing to compare.
        """
        if position is None:
            return True
        if position <= self._positions.get(topic, ZERO):
            return False
        self._positions[topic] = position
        return True

    def admit_all(self, notifications: Iterable[Notification]) -> list[Notification]:
        """The new ones of ``notifications``, in order (``admit`` applied to each)."""
        return [n for n in notifications if self.admit(n.topic, n.position)]

    def positions(self) -> dict[str, str]:
        """Each topic's position in wire form: what a back-fill reads after, and the ``offsets``
        of the ``connected`` frame (a valid ``since`` for the next connect, §8)."""
        return {topic: str(position) for topic, position in self._positions.items()}
