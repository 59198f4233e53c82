"""A socket's live queue on a pooled channel.

The live path is described in ``hub.backends.rabbitmq`` (which creates these). Each
subscription declares an exclusive, auto-delete queue with a fresh name (or takes a
closed socket's queue, ``hub.backends.spare_queues``), bound to its topics and consumed
on one of the broker's pooled channels (``ChannelSlot``), without
acknowledgements (``no_ack``): the queue dies with the hub's connection or channel, so an
ack would buy no durability, only flow control, and the hub's own bound replaces that.
RabbitMQ pushes each delivery as it comes; the subscription buffers it until the session
takes it, and past ``socket_queue_size`` waiting it overflows (the session closes 1013 and
the client catches up from history), as the embedded backend's buffer does.

After the channel reopens, the broker suspends each subscription until its queue is
declared again (``restored``: the session back-fills the gap) or its deadline passes
(``lose``: the session closes 1013).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiormq
from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import DeliveredMessage

from hub.backends import direct_dispatch
from hub.backends.base import Direct, SubscriptionGap, SubscriptionLost, SubscriptionOverflow
from hub.lean_async import LeanEvent
from hub.notification import Notification
from hub.settings import Settings

log = logging.getLogger("hub.rabbitmq")

#: Milliseconds an unconsumed socket queue lives (one whose declare was cut short).
ORPHAN_EXPIRY_MS = 60_000


async def cancel_consumer(channel: aiormq.abc.AbstractChannel, queue: str, within: float) -> None:
    """Stop consuming ``queue`` (its consumer tag) on ``channel``, which deletes the auto-delete
    queue; within ``within`` seconds. A channel that is gone took the consumer with it, and one that
    is stuck is left to its own end: neither raises."""
    direct_dispatch.forget(channel, queue)
    try:
        async with asyncio.timeout(within):
            await channel.basic_cancel(queue, nowait=True)
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError):
        log.debug("cancel of %s after its channel closed or stalled", queue)


class QueueOwner(Protocol):
    """What a subscription needs of the broker that created it."""

    settings: Settings
    bind_exchange: str  # where the queue binds its topics
    overflow_queue: str  # where the queue dead-letters what it drops
    dropped: int  # unreadable live messages, counted
    overflows: int  # subscriptions that overflowed, counted

    @property
    def spares(self) -> Spares:
        """Closed sockets' queues, for the next ones."""
        ...


class Spares(Protocol):
    """Where a closed subscription's queue waits for the next (``hub.backends.spare_queues``)."""

    def keep(self, slot: ChannelSlot, channel: aiormq.abc.AbstractChannel, queue: str, topics: Sequence[str]) -> bool:
        """Keep ``queue``, bound to ``topics``, for a later subscription, or return False (cancel it then)."""
        ...


@dataclass(frozen=True, slots=True)
class Spare:
    """A kept queue: consumed on ``channel`` (``slot``'s, when it was kept), bound to ``topics``."""

    queue: str
    slot: ChannelSlot
    channel: aiormq.abc.AbstractChannel
    topics: tuple[str, ...]


class ChannelSlot:
    """One pooled channel and the subscriptions consuming on it (by queue name)."""

    def __init__(self, channel: AbstractRobustChannel) -> None:
        self.robust = channel
        self.underlay: aiormq.abc.AbstractChannel | None = None
        self.generation = 0
        self.subscriptions: dict[str, AmqpSubscription] = {}
        self.restorer: asyncio.Task[None] | None = None
        self.answered = 0.0  # loop time of the channel's last answered declare: it is alive

    @property
    def usable(self) -> bool:
        """The slot's current channel is open (a subscribe may use it)."""
        return self.underlay is not None and not self.underlay.is_closed

    async def progressing(self, work: asyncio.Task[None], seconds: float) -> None:
        """Wait for ``work`` until this channel has answered nothing for ``seconds`` (since
        this wait began or since its last answer), then raise TimeoutError; ``work`` is left
        running (it is never cancelled from here). Raises what ``work`` raised.

        A deadline on the broker's silence, not on the queue: behind a connect storm's
        declares on a busy channel, a declare waits as long as the channel keeps answering.
        """
        loop = asyncio.get_running_loop()
        began = loop.time()
        while not work.done():
            try:
                async with asyncio.timeout_at(max(began, self.answered) + seconds):
                    await asyncio.wait({work})
            except TimeoutError:
                if max(began, self.answered) + seconds <= loop.time():
                    raise
        work.result()

    def reset(self, underlay: aiormq.abc.AbstractChannel) -> None:
        self.underlay = underlay
        self.generation += 1


class AmqpSubscription:
    """A socket's queue; see the module docstring. Created by ``LiveBroker.subscribe``."""

    def __init__(
        self,
        broker: QueueOwner,
        slot: ChannelSlot,
        topics: Sequence[str],
        parse: Callable[[DeliveredMessage], Notification],
        spare: Spare | None = None,
    ) -> None:
        """``spare``: a kept queue of ``slot``'s channel the first ``declare`` takes (and rebinds
        if its topics differ) instead of declaring one."""
        self._broker = broker
        self._slot = slot
        self._spare = spare
        self.topics = tuple(topics)
        self.queue = ""  # named by each ``declare``
        self._parse = parse
        self._buffer: list[Notification] = []
        self._bound = broker.settings.socket_queue_size
        self._generation = slot.generation
        self._consuming_on: aiormq.abc.AbstractChannel | None = None
        self._ready = LeanEvent()  # one per socket: hub.lean_async
        self._overflowed = False
        self._gap = False
        self._lost: str | None = None
        self.restoring = False
        self.restore_by: float | None = None  # loop time: restored by then, or lost
        self.closed = False
        self._direct: Direct | None = None  # set while ``receive`` waits

    async def declare(self) -> None:
        """Declare a fresh queue, bind and consume, in one round trip on the slot's current
        channel; or take the spare this was given (a closed socket's queue, still bound and
        consumed): as it is if it is bound to these topics, else rebound (``_rebind``).

        A fresh name every time: after a network partition the broker may still hold the
        previous queue, exclusive to a connection it has not yet found dead, and would
        refuse its name. A subscription closed while this was waiting for the broker
        cancels the consumer as soon as it exists, so nothing is left behind.
        """
        slot = self._slot
        channel = await slot.robust.get_underlay_channel()
        if channel is not slot.underlay:
            slot.reset(channel)
        previous = self.queue
        if self._consuming_on is channel and not channel.is_closed:
            direct_dispatch.forget(channel, previous)
            await channel.basic_cancel(previous, nowait=True)  # never two consumers for one socket
        slot.subscriptions.pop(previous, None)
        spare, self._spare = self._spare, None
        if spare is not None and not await self._adopt(spare, channel):
            spare = None
        self.queue = queue = spare.queue if spare is not None else f"hub.sock.{uuid.uuid4().hex}"
        self._generation = slot.generation
        if not self.closed:
            slot.subscriptions[queue] = self
        if spare is None:
            await self._declare_fresh(channel, queue)
        elif spare.topics != self.topics:
            await self._rebind(channel, queue, spare.topics)
        self._consuming_on = channel
        slot.answered = asyncio.get_running_loop().time()
        if self.closed:
            await self._cancel(channel)

    async def _adopt(self, spare: Spare, channel: aiormq.abc.AbstractChannel) -> bool:
        """Consume ``spare`` from now on, if it is still there on ``channel`` and this is not
        closed; else cancel it (which deletes it) and return False."""
        open_here = not self.closed and spare.channel is channel and not channel.is_closed
        if open_here and direct_dispatch.redirect(channel, spare.queue, self._on_message):
            return True
        await cancel_consumer(spare.channel, spare.queue, self._broker.settings.backend_timeout)
        return False

    async def _rebind(self, channel: aiormq.abc.AbstractChannel, queue: str, bound: Sequence[str]) -> None:
        """Bind a spare queue (bound to ``bound``) to this socket's topics instead.

        AMQP has no unbind without a reply: a round trip each; the binds but the last go
        with ``nowait``, the last one's reply settling them (the channel answers in order).
        """
        exchange = self._broker.bind_exchange
        for topic in bound:
            if topic not in self.topics:
                await channel.queue_unbind(queue, exchange, routing_key=topic)
        new = [topic for topic in self.topics if topic not in bound]
        for topic in new[:-1]:
            await channel.queue_bind(queue, exchange, routing_key=topic, nowait=True)
        if new:
            await channel.queue_bind(queue, exchange, routing_key=new[-1])

    async def _declare_fresh(self, channel: aiormq.abc.AbstractChannel, queue: str) -> None:
        """Declare, bind and consume: the consume's reply settles all three."""
        settings = self._broker.settings
        arguments: dict[str, Any] = {
            "x-max-length": settings.socket_queue_size,
            "x-overflow": "drop-head",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self._broker.overflow_queue,
            # A declare cut short before its consume leaves a queue nobody consumes (and the
            # exclusive queue lives as long as the connection): the broker deletes it then.
            "x-expires": ORPHAN_EXPIRY_MS,
        }
        await channel.queue_declare(queue, exclusive=True, auto_delete=True, arguments=arguments, nowait=True)
        for topic in self.topics:
            await channel.queue_bind(queue, self._broker.bind_exchange, routing_key=topic, nowait=True)
        # no_ack: the queue dies with this channel, so an ack would keep nothing safe (module doc).
        await direct_dispatch.consume(channel, queue, self._on_message, consumer_tag=queue, no_ack=True)

    def _on_message(self, message: DeliveredMessage) -> None:
        """A delivery, in the channel's reader task (``direct_dispatch``): kept, never awaited.

        Only what one of this socket's own topics routed is kept: a spare queue (one a closed
        socket left) may still receive what was routed to that socket's topics."""
        if self.closed or self._overflowed:  # the socket is going: nothing more is kept for it
            return
        if message.routing_key not in self.topics:
            return
        try:
            notification = self._parse(message)
        except Exception as exc:  # never let one bad body stop a socket; it is counted and dropped
            log.warning("dropping an unreadable live message on %s: %s", self.queue, exc)
            self._broker.dropped += 1
            return
        buffer = self._buffer
        direct = self._direct  # set while the session waits in ``receive``
        # Never before a gap is filled or the queue is back: what those bring comes first.
        if direct is not None and not (buffer or self._gap or self.restoring or self._lost) and direct(notification):
            return  # sent from here: the session's task is spared a wake-up (base.Subscription)
        if len(buffer) >= self._bound:
            # The session has not taken ``socket_queue_size`` deliveries: the socket (or its
            # back-fill) is that far behind. Dropped, not kept: it is closed with 1013.
            self._broker.overflows += 1
            self.overflow()
            return
        buffer.append(notification)
        self._ready.set()

    def overflow(self) -> None:
        """The socket fell behind its bound: the next ``receive`` raises SubscriptionOverflow."""
        self._overflowed = True
        self._buffer = []
        self._ready.set()

    def suspend(self, deadline: float) -> None:
        """The channel is back but this queue is not yet: hold ``receive`` until ``restored``,
        or until ``deadline`` (loop time) passes and the restorer gives it up (``lose``).

        What the old queue delivered and the session has not taken yet is still handed out
        (each delivery is a notification the socket did not get); what it still held is
        gone with it and is back-filled from history after ``restored``.
        """
        self.restoring = True
        if self.restore_by is None:
            self.restore_by = deadline
        self._consuming_on = None

    def restored(self) -> None:
        """The queue is declared, bound and consumed again: messages published while it was
        gone may be missing, so the next ``receive`` raises SubscriptionGap.

        The order matters: the gap is raised only once the binds exist, so the back-fill
        from history sees everything the live queue missed; and no delivery of the new
        queue is handed out before it, so the back-fill starts from the last offset the
        socket got before the drop.
        """
        self.restoring = False
        self.restore_by = None
        self._gap = True
        self._ready.set()

    def lose(self, reason: str) -> None:
        """Give up restoring: the next ``receive`` raises SubscriptionLost with ``reason``."""
        self.restoring = False
        self._lost = reason
        self._slot.subscriptions.pop(self.queue, None)
        self._ready.set()

    async def receive(self, direct: Direct | None = None) -> Sequence[Notification]:
        while True:
            if self._lost is not None:
                raise SubscriptionLost(self._lost)
            if self._overflowed:
                raise SubscriptionOverflow(
                    f"more than {self._broker.settings.socket_queue_size} notifications waiting for one socket"
                )
            if not self.restoring:
                if self._gap:
                    self._gap = False
                    raise SubscriptionGap("the broker connection was restored; live messages may have been missed")
                if self._buffer:
                    break
            self._ready.clear()
            self._direct = direct
            try:
                await self._ready.wait()
            finally:
                self._direct = None
        batch, self._buffer = self._buffer, []
        return batch

    def ack(self) -> None:
        """Nothing to do: deliveries are unacknowledged (``no_ack``), gone from RabbitMQ once sent."""

    def abandon(self) -> None:
        """Close without waiting for the broker: what ``close`` does, the cancel left to
        ``declare`` (still running, its caller gave up) or to the channel's end."""
        if self.closed:
            return
        self.closed = True
        self._slot.subscriptions.pop(self.queue, None)
        if self._consuming_on is not None:
            direct_dispatch.forget(self._consuming_on, self.queue)
        self._buffer = []

    async def close(self) -> None:
        """Keep the queue for the next socket (``hub.backends.spare_queues``), or delete it."""
        if self.closed:
            return
        kept_whole = not (self._overflowed or self.restoring or self._lost is not None)
        self.abandon()
        channel = self._consuming_on
        if channel is not None and channel is self._slot.underlay and not channel.is_closed:
            if kept_whole and self._broker.spares.keep(self._slot, channel, self.queue, self.topics):
                return
            # Cancelling the only consumer deletes the auto-delete queue (and its messages).
            await self._cancel(channel)

    async def _cancel(self, channel: aiormq.abc.AbstractChannel) -> None:
        await cancel_consumer(channel, self.queue, self._broker.settings.backend_timeout)
