"""Notifications to one socket: the replay on connect, then live ones (docs/protocol.md §5, §8).

In order, without a gap or a duplicate: the ``Cursor`` (hub/cursor.py) says which
notification is new, the ``Transport`` (hub/transport.py) writes them. The live pump
takes the next batch from the subscription as soon as the previous one is queued, so a
socket that falls behind is noticed while its writes still wait on the client: its
subscription overflows, or its own queue passes ``socket_queue_size``, and ``TooSlow``
ends the connection (1013; the client resumes from history). While the pump waits and
nothing is queued, a notification is written where it arrives instead (``_write_direct``),
without waking the pump: the usual case for a socket that keeps up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

from hub.backends.base import History, Subscription, SubscriptionGap, SubscriptionOverflow
from hub.channel import Channel
from hub.cursor import Cursor
from hub.lease import BackendTimeout
from hub.metrics import Metrics
from hub.notification import Notification, now_ms
from hub.protocol import Codec, Wire
from hub.settings import Settings
from hub.topics import Offset

log = logging.getLogger("hub.delivery")

#: Builds the ``connected`` frame from ``recovered`` and ``offsets``.
Greeting = Callable[[bool, dict[str, str]], Wire]


class TooSlow(Exception):
    """The socket fell more than its bound behind; it must be closed with 1013."""


class Delivery:
    """What one connection is sent of its topics' notifications."""

    __slots__ = (
        "_codec",
        "_direct",
        "_history",
        "_metrics",
        "_on_written",
        "_settings",
        "_subscription",
        "_transport",
        "_unacked",
        "cursor",
    )

    def __init__(
        self, transport: Channel, codec: Codec, history: History | None, settings: Settings, metrics: Metrics
    ) -> None:
        self._transport = transport
        self._codec = codec
        self._history = history
        self._settings = settings
        self._metrics = metrics
        self._subscription: Subscription | None = None
        self._unacked: list[Notification] = []  # queued since the subscription was last acked
        self._on_written = self._written  # bound once, not once per batch
        self._direct = self._write_direct  # bound once, not once per receive
        self.cursor = Cursor()

    async def recover(self, topics: Sequence[str], since: Mapping[str, Offset], greeting: Greeting) -> None:
        """Send ``connected``, then history after each ``since`` offset (§5, §8); return once written.

        Called once the live subscription exists, so nothing published from then on is
        missed; the cursor drops live notifications at or below what was replayed. A
        topic without ``since`` starts at its latest offset, read now: whatever the live
        queue holds up to it was published before ``connected`` and is not for this
        connection. A ``since`` beyond the latest offset is clamped to it and answered
        ``recovered: false``; so is one within the retained range that this history never
        issued (another site's: ``Cursor.replay``). Raises BackendTimeout when history does
        not answer in time.
        """
        if since:
            self._metrics.reconnects.inc()
        history = self._history
        if history is None:
            await self._transport.write([greeting(not since, {})])
            await self._transport.flush()
            return
        async with _history_deadline(self._settings.backend_timeout):
            latest = await history.latest(topics)
            start = self.cursor.start(topics, since, {t: Offset.parse(o) for t, o in latest.items()})
            reads = await history.read(start.read_after) if start.read_after else {}
        replay = self.cursor.replay(reads)
        await self._transport.write([greeting(start.recovered(reads), self.cursor.positions()), *self._encode(replay)])
        await self._transport.flush()  # live notifications queue behind the replay, not beside it
        self._metrics.replayed.inc(len(replay))

    async def pump(self, subscription: Subscription) -> None:
        """Move live notifications to the transport until something stops it (raised).

        Raises TooSlow, BackendTimeout (a back-fill that history did not answer) or
        PeerGone. What was taken is acked once it (and everything taken before) is written.
        """
        self._subscription = subscription
        transport = self._transport
        bound = self._settings.socket_queue_size
        take = self._take
        while True:
            try:
                batch = await subscription.receive(self._direct)
            except SubscriptionOverflow as exc:
                raise self._too_slow(str(exc)) from None
            except SubscriptionGap:
                await self._backfill()
                continue
            frames = [wire for wire in map(take, batch) if wire is not None]
            if transport.backlog + len(frames) > bound:
                raise self._too_slow(f"more than {bound} notifications waiting for one socket")
            await transport.write(frames, self._on_written)

    def _write_direct(self, notification: Notification) -> bool:
        """A live notification that came while ``pump`` waits, with nothing queued before it:
        written here, in the backend's task, when the transport sends at once; False when
        ``pump`` must take it (``Subscription.receive``). Spares the session's task a
        wake-up per notification (docs/benchmarks.md, issue 12). Nothing is queued, so the
        socket's bound cannot be passed here."""
        transport = self._transport
        if not transport.sends_at_once:
            return False
        wire = self._take(notification)
        if wire is not None:
            transport.write_at_once(wire, self._on_written)
        return True

    def _take(self, notification: Notification) -> Wire | None:
        """The frame of a live notification new to the cursor, which now counts it as sent and
        unacked; None for a duplicate or one that cannot be encoded (``_frame``)."""
        if not self.cursor.admit(notification.topic, notification.position):
            return None
        wire = self._frame(notification)
        if wire is not None:
            self._unacked.append(notification)
        return wire

    def _written(self) -> None:
        """After a batch's frames: once nothing taken is still unsent, count it all and ack it all."""
        if self._transport.backlog:
            return  # a later batch is queued: its own callback comes after it
        sent, self._unacked = self._unacked, []
        now = now_ms()
        observe = self._metrics.delivery_latency.observe
        for notification in sent:
            observe(max(0, now - notification.ts) / 1000)
        self._metrics.notifications_out.inc(len(sent))
        if self._subscription is not None:
            self._subscription.ack()

    def _too_slow(self, detail: str) -> TooSlow:
        self._metrics.overflows.inc()
        return TooSlow(detail)

    async def _backfill(self) -> None:
        """After a live gap, send what history holds above each topic's position."""
        self._metrics.gaps.inc()
        history = self._history
        if history is None:
            return  # at-most-once without history: nothing to back-fill from
        async with _history_deadline(self._settings.backend_timeout):
            reads = await history.read(self.cursor.positions())
        fresh = self.cursor.replay(reads)
        await self._transport.write(self._encode(fresh))
        await self._transport.flush()
        self._metrics.notifications_out.inc(len(fresh))

    def _encode(self, notifications: Iterable[Notification]) -> list[Wire]:
        """The frames of ``notifications`` that can be encoded (``_frame``)."""
        return [wire for wire in map(self._frame, notifications) if wire is not None]

    def _frame(self, notification: Notification) -> Wire | None:
        """The notification's frame; None (logged and counted) when it cannot be encoded: that
        is never a close, since every replay of it would close the socket again."""
        try:
            return notification.frame(self._codec)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. an int past 64 bits in msgpack
            log.error("notification %s cannot be sent as %s: %s", notification.id, self._codec.name, exc)
            self._metrics.errors.labels(where="encode").inc()
            return None


@contextlib.asynccontextmanager
async def _history_deadline(limit: float) -> AsyncIterator[None]:
    """``asyncio.timeout`` for history reads, raising BackendTimeout with a reason fit for the client."""
    try:
        async with asyncio.timeout(limit):
            yield
    except TimeoutError:
        raise BackendTimeout(f"history did not answer within {limit:g} s") from None
