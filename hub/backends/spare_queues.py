"""Spare socket queues: a closed socket's queue, kept for the next socket (docs/protocol.md §5).

Most of what a socket costs RabbitMQ is its queue's life, not its messages: declare
about 1.0 ms of broker CPU, each bind 0.3, consume 0.1, and the cancel that deletes it
0.7 (``python -m bench.rabbit_floor --phases``, docs/benchmarks.md). So when a socket
closes normally its queue is not deleted: it is kept as it is, bound and consumed by the
replica (by a handler that drops whatever comes), for ``SPARE_SECONDS``. The next socket
subscribing with the same topics (its user coming back: a reload, a reconnect storm)
takes it back as it is, at no cost to the broker; a socket with other topics takes the
oldest spare and rebinds it (for a socket's two keys, two unbinds and two binds: about
1.2 ms instead of 2.5 for a queue's whole life); with no spare, a queue is declared as before.

What stays true: the queue is exclusive to the replica's connection and auto-delete, and
serves one socket at a time; it dies with the connection or the channel (a spare whose
channel closed is forgotten); a spare not taken within ``SPARE_SECONDS`` is cancelled,
which deletes it; at most ``HUB_SPARE_QUEUES`` are kept per replica, and past that a
closing socket's queue is deleted at once, as with ``HUB_SPARE_QUEUES=0``. The queue of a
socket that overflowed, or that was being restored, is never kept.

Nothing of one socket reaches another: a spare drops what it receives; a subscription
hands out only deliveries routed by one of its own topics (``AmqpSubscription._on_message``),
so a message routed to the previous topics, even late from another node, is dropped; and
an overflow is charged to it only if the dropped message was routed by one of them
(``LiveBroker._on_overflow``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiormq
from aiormq.abc import DeliveredMessage

from hub.backends import direct_dispatch
from hub.backends.live_queues import ChannelSlot, Spare, cancel_consumer

#: Seconds a spare queue waits for a socket before it is cancelled (and so deleted).
SPARE_SECONDS = 30.0


def _drop(message: DeliveredMessage) -> None:
    """A spare's consumer: what still comes for a socket that closed goes nowhere."""


def _alive(spare: Spare) -> bool:
    """Whether ``spare``'s channel is its slot's open channel (else its queue went with it)."""
    return spare.channel is spare.slot.underlay and not spare.channel.is_closed


class SpareQueues:
    """The replica's spare socket queues, by name, oldest first."""

    def __init__(self, limit: int, timeout: float) -> None:
        """``limit``: ``HUB_SPARE_QUEUES``, the most kept at once (0: none); ``timeout``: what
        the cancel of a spare nobody took may take (``backend_timeout``)."""
        self.limit = limit
        self._timeout = timeout
        self._kept: dict[str, tuple[Spare, float]] = {}  # name → (spare, loop time it goes at); oldest first
        self._by_topics: dict[tuple[str, ...], list[str]] = {}
        self.reused = 0  # sockets that took a spare instead of declaring a queue, counted

    @property
    def kept(self) -> int:
        """Queues kept for a socket now."""
        return len(self._kept)

    def keep(self, slot: ChannelSlot, channel: aiormq.abc.AbstractChannel, queue: str, topics: Sequence[str]) -> bool:
        """Keep ``queue`` (consumed on ``channel``, bound to ``topics``; its subscription is
        closed) as it is, or return False: the caller cancels it. Costs the broker nothing."""
        if len(self._kept) >= self.limit or channel is not slot.underlay or channel.is_closed:
            return False
        if not direct_dispatch.redirect(channel, queue, _drop):
            return False  # an aiormq that cannot be hooked, or the broker cancelled the consumer
        spare = Spare(queue, slot, channel, tuple(topics))
        self._kept[queue] = (spare, asyncio.get_running_loop().time() + SPARE_SECONDS)
        self._by_topics.setdefault(spare.topics, []).append(queue)
        return True

    def take(self, topics: Sequence[str]) -> Spare | None:
        """A kept queue for a subscription to ``topics``, no longer kept: the newest one bound
        to exactly these topics, else the oldest; None when none is kept (declare one). The
        subscription adopts it on its channel (``AmqpSubscription.declare``), rebinding it
        if its topics differ."""
        while (queue := self._candidate(tuple(topics))) is not None:
            spare = self._forget(queue)
            if _alive(spare):
                self.reused += 1
                return spare
            # gone with its channel: the next one
        return None

    def _candidate(self, topics: tuple[str, ...]) -> str | None:
        same = self._by_topics.get(topics)
        if same:
            return same[-1]
        return next(iter(self._kept), None)

    def _forget(self, queue: str) -> Spare:
        spare, _ = self._kept.pop(queue)
        names = self._by_topics[spare.topics]
        names.remove(queue)
        if not names:
            del self._by_topics[spare.topics]
        return spare

    async def sweep(self) -> None:
        """Forever: cancel the spares that waited ``SPARE_SECONDS`` (their queues are deleted),
        and forget those whose channel closed (their queues went with it)."""
        while True:
            await asyncio.sleep(SPARE_SECONDS / 4)  # a sweep interval, not synchronisation
            now = asyncio.get_running_loop().time()
            done = [queue for queue, (spare, until) in self._kept.items() if until <= now or not _alive(spare)]
            for queue in done:
                if queue not in self._kept:
                    continue  # taken while an earlier cancel was written
                spare = self._forget(queue)
                if _alive(spare):
                    await cancel_consumer(spare.channel, queue, self._timeout)
