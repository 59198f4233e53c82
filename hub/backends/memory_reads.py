"""Read state of the embedded backend: in this process, next to its history (docs/protocol.md §9).

Per user and topic a cursor and a set of single marks after it. Every call recomputes
the state against what the history retains: marks at or below the cursor fold into
it, marks of notifications no longer retained are dropped, so nothing is ever counted
from a notification that is gone. Changes are told to the user's sockets through the
broker, on the user's read key (hub/read_frames.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hub.backends.base import ReadEntry, ReadState
from hub.notification import Notification
from hub.read_frames import ReadEvent, read_key
from hub.topics import ZERO, Offset


class RetainingHistory(Protocol):
    """What read state needs of the embedded history (``MemoryHistory`` is one)."""

    def retained(self, topic: str) -> list[Notification]:
        """The topic's retained notifications, oldest first."""
        ...


class Pusher(Protocol):
    """What read state needs of the embedded broker (``MemoryBroker`` is one)."""

    def push(self, key: str, notification: Notification) -> None:
        """Hand ``notification`` to every subscription bound to ``key``."""
        ...


class MemoryReads:
    """The ``Reads`` seam in memory; lost with the process, like the history it refers to."""

    def __init__(self, history: RetainingHistory, broker: Pusher) -> None:
        self._history = history
        self._broker = broker
        self._states: dict[tuple[str, str], tuple[Offset, set[Offset]]] = {}

    def _state(self, user: str, topic: str) -> tuple[ReadState, list[Notification], Offset, set[Offset]]:
        """The state against what is retained now (folded and pruned, and kept so)."""
        entries = self._history.retained(topic)
        cursor, marks = self._states.get((user, topic), (ZERO, set()))
        after = {n.position for n in entries if n.position is not None and n.position > cursor}
        marks = marks & after
        if cursor != ZERO or marks:
            self._states[(user, topic)] = (cursor, marks)
        state = ReadState(topic, str(cursor), tuple(str(m) for m in sorted(marks)), len(after) - len(marks))
        return state, entries, cursor, marks

    async def unread(self, user: str, topics: Sequence[str]) -> dict[str, int]:
        return {topic: self._state(user, topic)[0].unread for topic in topics}

    async def mark(self, user: str, topic: str, *, up_to: str | None, offsets: Sequence[str]) -> ReadState:
        _, entries, cursor, marks = self._state(user, topic)
        if up_to is not None and entries:
            newest = entries[-1].position
            assert newest is not None
            cursor = max(cursor, min(Offset.parse(up_to), newest))
        retained = {n.position for n in entries}
        marks = {m for m in marks if m > cursor}
        marks |= {o for o in map(Offset.parse, offsets) if o > cursor and o in retained}
        self._states[(user, topic)] = (cursor, marks)
        state = self._state(user, topic)[0]
        self._broker.push(read_key(user), ReadEvent(user, state))
        return state

    async def page(self, user: str, topic: str, *, before: str | None, limit: int) -> list[ReadEntry]:
        _, entries, cursor, marks = self._state(user, topic)
        bound = Offset.parse(before) if before is not None else None
        page: list[ReadEntry] = []
        for n in reversed(entries):
            position = n.position
            assert position is not None
            if bound is not None and position >= bound:
                continue
            page.append(ReadEntry(n, position <= cursor or position in marks))
            if len(page) >= limit:
                break
        return page
