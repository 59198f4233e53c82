"""The embedded backend: broker, history and presence in this process, no services needed.

It keeps the distributed backend's contract exactly (offsets in the Redis stream id
form, retention by count and age, id de-duplication, the ``complete`` flag of a
history read), so the same contract tests run on both. State lives in memory: it
is lost when the process stops, and it is not shared between processes.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from hub.backends.base import (
    Connection,
    Direct,
    HistoryRead,
    Receipt,
    SubscriptionOverflow,
    issued_here,
)
from hub.backends.memory_reads import MemoryReads
from hub.lean_async import LeanEvent
from hub.notification import Notification, new_id, now_ms
from hub.settings import Settings
from hub.topics import ZERO_OFFSET, format_offset, parse_offset


class _Stream:
    """One topic's retained notifications, oldest first."""

    __slots__ = ("entries", "ids", "last", "max_deleted")

    def __init__(self) -> None:
        self.entries: deque[tuple[tuple[int, int], Notification]] = deque()
        self.ids: dict[str, str] = {}
        self.last = (0, 0)
        self.max_deleted = (0, 0)

    def drop_oldest(self) -> None:
        key, notification = self.entries.popleft()
        self.max_deleted = key
        self.ids.pop(notification.id, None)


class MemoryHistory:
    """Per-topic history capped at ``size`` entries and ``ttl`` seconds."""

    def __init__(self, size: int, ttl: float) -> None:
        self._size = size
        self._ttl_ms = int(ttl * 1000)
        self._streams: dict[str, _Stream] = {}

    def _trim_age(self, stream: _Stream, now: int) -> None:
        if self._ttl_ms <= 0:
            return
        horizon = now - self._ttl_ms
        while stream.entries and stream.entries[0][0][0] < horizon:
            stream.drop_oldest()

    async def append(self, topic: str, id: str, ts: int, data: Any) -> tuple[str, bool]:
        return self.append_now(topic, id, ts, data)

    def append_now(self, topic: str, id: str, ts: int, data: Any) -> tuple[str, bool]:
        """``append`` without awaiting: the broker sequences and fans out in one step."""
        stream = self._streams.get(topic)
        if stream is None:
            stream = self._streams[topic] = _Stream()
        now = now_ms()
        self._trim_age(stream, now)
        existing = stream.ids.get(id)
        if existing is not None:
            return existing, True
        last_ms, last_seq = stream.last
        key = (now, 0) if now > last_ms else (last_ms, last_seq + 1)
        offset = format_offset(*key)
        stream.last = key
        stream.entries.append((key, Notification(id=id, topic=topic, offset=offset, ts=ts, data=data)))
        stream.ids[id] = offset
        while len(stream.entries) > self._size:
            stream.drop_oldest()
        return offset, False

    def retained(self, topic: str) -> list[Notification]:
        """``topic``'s retained notifications, oldest first (read state counts these)."""
        stream = self._streams.get(topic)
        if stream is None:
            return []
        self._trim_age(stream, now_ms())
        return [n for _, n in stream.entries]

    def notification(self, topic: str) -> Notification:
        """The newest notification of ``topic`` (just appended by the caller)."""
        return self._streams[topic].entries[-1][1]

    async def latest(self, topics: Sequence[str]) -> dict[str, str]:
        result: dict[str, str] = {}
        for topic in topics:
            stream = self._streams.get(topic)
            result[topic] = format_offset(*stream.last) if stream is not None else ZERO_OFFSET
        return result

    async def read(self, after: Mapping[str, str]) -> dict[str, HistoryRead]:
        now = now_ms()
        result: dict[str, HistoryRead] = {}
        for topic, offset in after.items():
            key = parse_offset(offset)
            stream = self._streams.get(topic)
            if stream is None:
                if not issued_here(key, last=(0, 0), max_deleted=(0, 0), is_entry=False, now=now):
                    result[topic] = HistoryRead([], complete=False, latest=ZERO_OFFSET)
                    continue
                result[topic] = HistoryRead([], complete=key == (0, 0))
                continue
            self._trim_age(stream, now)
            keys = [k for k, _ in stream.entries]
            at = bisect.bisect_left(keys, key)
            is_entry = at < len(keys) and keys[at] == key
            if key != (0, 0) and stream.max_deleted == (0, 0) and keys and key < keys[0]:
                # An offset from before this stream began (the previous life of a restarted
                # embedded hub): everything retained came after it, so it is replayed, and
                # what that earlier life held is gone (docs/protocol.md §5).
                result[topic] = HistoryRead([n for _, n in stream.entries], complete=False)
                continue
            if not issued_here(key, last=stream.last, max_deleted=stream.max_deleted, is_entry=is_entry, now=now):
                result[topic] = HistoryRead([], complete=False, latest=format_offset(*stream.last))
                continue
            found = [n for k, n in stream.entries if k > key]
            result[topic] = HistoryRead(found, complete=key >= stream.max_deleted)
        return result


class _MemorySubscription:
    """A socket's live buffer; overflows (instead of growing) past ``bound`` notifications."""

    def __init__(self, broker: MemoryBroker, topics: Sequence[str], bound: int) -> None:
        self._broker = broker
        self.topics = tuple(topics)
        self._bound = bound
        self._buffer: list[Notification] = []
        self._ready = LeanEvent()  # one per socket: hub.lean_async
        self._overflowed = False
        self._direct: Direct | None = None  # set while ``receive`` waits
        self.closed = False

    def push(self, notification: Notification) -> None:
        if self._overflowed:
            return
        direct = self._direct
        if direct is not None and not self._buffer and direct(notification):
            return  # sent from here (base.Subscription.receive)
        if len(self._buffer) >= self._bound:
            self._overflowed = True
            self._buffer.clear()
            self._broker.overflows += 1
        else:
            self._buffer.append(notification)
        self._ready.set()

    async def receive(self, direct: Direct | None = None) -> Sequence[Notification]:
        while not self._buffer and not self._overflowed:
            self._ready.clear()
            self._direct = direct
            try:
                await self._ready.wait()
            finally:
                self._direct = None
        if self._overflowed:
            raise SubscriptionOverflow(f"more than {self._bound} notifications waiting for one socket")
        batch, self._buffer = self._buffer, []
        return batch

    def ack(self) -> None:
        """Nothing to do: memory deliveries are gone from the buffer once received."""

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._broker.unsubscribe(self)


class MemoryBroker:
    """Sequences into ``history`` (when on) and fans out to subscriptions in one step."""

    def __init__(self, history: MemoryHistory | None, bound: int) -> None:
        self._history = history
        self._bound = bound
        self._subscribers: dict[str, set[_MemorySubscription]] = {}
        self.overflows = 0

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> Receipt:
        id = message_id or new_id()
        ts = now_ms()
        if self._history is None:
            notification = Notification(id=id, topic=topic, offset=None, ts=ts, data=data)
        else:
            offset, duplicate = self._history.append_now(topic, id, ts, data)
            if duplicate:
                return Receipt(id, offset, duplicate=True)
            notification = self._history.notification(topic)
        for subscription in self._subscribers.get(topic, ()):
            subscription.push(notification)
        return Receipt(id, notification.offset)

    async def subscribe(self, topics: Sequence[str]) -> _MemorySubscription:
        subscription = _MemorySubscription(self, topics, self._bound)
        for topic in subscription.topics:
            self._subscribers.setdefault(topic, set()).add(subscription)
        return subscription

    def push(self, key: str, notification: Notification) -> None:
        """Hand ``notification`` to every subscription bound to ``key`` (a topic, or a user's
        read key: hub/read_frames.py)."""
        for subscription in self._subscribers.get(key, ()):
            subscription.push(notification)

    def unsubscribe(self, subscription: _MemorySubscription) -> None:
        for topic in subscription.topics:
            subscribers = self._subscribers.get(topic)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[topic]


class MemoryPresence:
    """Connection counts of this process (the only replica there is)."""

    def __init__(self) -> None:
        self._users: dict[str, set[str]] = {}

    async def add(self, conn: Connection) -> int:
        conns = self._users.setdefault(conn.user, set())
        conns.add(conn.conn_id)
        return len(conns)

    async def remove(self, conn: Connection) -> int:
        conns = self._users.get(conn.user)
        if conns is None:
            return 0
        conns.discard(conn.conn_id)
        if not conns:
            del self._users[conn.user]
            return 0
        return len(conns)

    async def count(self, users: Sequence[str]) -> dict[str, int]:
        return {user: len(self._users.get(user, ())) for user in users}


class MemoryBackend:
    """The embedded backend: chosen when neither HUB_AMQP_URL nor HUB_REDIS_URL is set."""

    def __init__(self, settings: Settings) -> None:
        history = MemoryHistory(settings.history_size, settings.history_ttl) if settings.history_enabled else None
        self._history = history
        self._broker = MemoryBroker(history, settings.socket_queue_size)
        self._presence = MemoryPresence()
        self._reads = MemoryReads(history, self._broker) if history is not None else None

    @property
    def name(self) -> str:
        return "memory"

    @property
    def broker(self) -> MemoryBroker:
        return self._broker

    @property
    def history(self) -> MemoryHistory | None:
        return self._history

    @property
    def presence(self) -> MemoryPresence:
        return self._presence

    @property
    def reads(self) -> MemoryReads | None:
        return self._reads

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def check(self) -> dict[str, str | None]:
        return {"memory": None}

    def stats(self) -> dict[str, Any]:
        return {"overflows": self._broker.overflows}
