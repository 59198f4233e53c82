"""RabbitMQ: the topology and the live path (DESIGN.md §4, §5).

Each subscription (one socket) gets an exclusive, auto-delete queue bound to its topics
on ``notifications.live`` (or on ``notifications`` when history is off), bounded by
``x-max-length`` with ``x-overflow: drop-head``. Dropped messages are dead-lettered
through the default exchange to this replica's overflow queue, whose consumer marks the
subscription overflowed: that is how a socket learns it fell behind.

Cost per connect is one round trip: the queue declare and the binds are sent with
``nowait`` and the ``basic.consume`` that follows on the same channel is answered only
after them, so its reply (or the channel error) settles all three. Subscriptions share a
small pool of channels (RabbitMQ allows 2047 per connection); aiormq dispatches each
delivery by consumer tag, which is the queue name. The connection is aio-pika's robust
one: it reopens the channels after a drop; each channel's ``reopen_callbacks`` then
re-declares its subscriptions' queues and makes each raise ``SubscriptionGap`` once, so
the session back-fills from history whatever the old (deleted) queues held.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from hub import wire
from hub.backends.base import BackendUnavailable, Receipt, SubscriptionGap, SubscriptionOverflow
from hub.backends.topology import declare_topology as declare_topology  # re-exported: moved to topology.py
from hub.notification import Notification, now_ms
from hub.settings import Settings

log = logging.getLogger("hub.rabbitmq")

CHANNEL_POOL = 8


class _Slot:
    """One pooled channel and the acknowledgements of its deliveries.

    Delivery tags are per channel and ``multiple=True`` acks every earlier tag of the
    channel, whoever consumed it; so acks are coalesced here: the longest run of done
    tags at the head goes in one multiple ack, the others one by one.
    """

    def __init__(self, channel: AbstractRobustChannel) -> None:
        self.robust = channel
        self.underlay: aiormq.abc.AbstractChannel | None = None
        self.generation = 0
        self.subscriptions: dict[str, AmqpSubscription] = {}
        self._outstanding: deque[int] = deque()
        self._done: set[int] = set()
        self._acked: set[int] = set()
        self._flush_scheduled = False

    def delivered(self, tag: int) -> None:
        self._outstanding.append(tag)

    def ack(self, tags: list[int], generation: int) -> None:
        if generation != self.generation:
            return  # deliveries of a channel that is gone: the broker requeued them already
        self._done.update(tags)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # One task per loop turn acks what every subscription of the channel finished.
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        self._flush_scheduled = False
        channel = self.underlay
        if channel is None or channel.is_closed:
            return
        head: int | None = None
        outstanding, done, acked = self._outstanding, self._done, self._acked
        while outstanding and (outstanding[0] in done or outstanding[0] in acked):
            tag = outstanding.popleft()
            if tag in done:
                done.discard(tag)
                head = tag
            else:
                acked.discard(tag)
        singles = list(done)
        acked.update(singles)
        done.clear()
        try:
            # wait=False: the frames are queued for the writer; acks have no reply.
            if head is not None:
                await channel.basic_ack(head, multiple=True, wait=False)
            for tag in singles:
                await channel.basic_ack(tag, wait=False)
        except aiormq.exceptions.AMQPError:
            log.debug("acks lost with their channel; the broker requeues those deliveries")

    def reset(self, underlay: aiormq.abc.AbstractChannel) -> None:
        self.underlay = underlay
        self.generation += 1
        self._outstanding.clear()
        self._done.clear()
        self._acked.clear()


class AmqpSubscription:
    """A socket's queue; see the module docstring. Created by ``LiveBroker.subscribe``."""

    def __init__(
        self,
        broker: LiveBroker,
        slot: _Slot,
        topics: Sequence[str],
        parse: Callable[[DeliveredMessage], Notification],
    ) -> None:
        self._broker = broker
        self._slot = slot
        self.topics = tuple(topics)
        self.queue = f"hub.sock.{uuid.uuid4().hex}"
        self._parse = parse
        self._buffer: list[Notification] = []
        self._tags: list[int] = []
        self._unacked: list[int] = []
        self._generation = slot.generation
        self._ready = asyncio.Event()
        self._overflowed = False
        self._gap = False
        self._restoring = False
        self.closed = False

    async def declare(self) -> None:
        """Declare, bind and consume in one round trip on the slot's current channel."""
        slot = self._slot
        channel = await slot.robust.get_underlay_channel()
        if channel is not slot.underlay:
            slot.reset(channel)
        self._generation = slot.generation
        slot.subscriptions[self.queue] = self
        settings = self._broker.settings
        arguments: dict[str, Any] = {
            "x-max-length": settings.socket_queue_size,
            "x-overflow": "drop-head",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self._broker.overflow_queue,
        }
        await channel.queue_declare(self.queue, exclusive=True, auto_delete=True, arguments=arguments, nowait=True)
        for topic in self.topics:
            await channel.queue_bind(self.queue, self._broker.bind_exchange, routing_key=topic, nowait=True)
        await channel.basic_consume(self.queue, self._on_message, consumer_tag=self.queue)

    async def _on_message(self, message: DeliveredMessage) -> None:
        tag = message.delivery_tag
        assert tag is not None
        self._slot.delivered(tag)
        try:
            notification = self._parse(message)
        except Exception as exc:  # never let one bad body stop a socket; it is counted and dropped
            log.warning("dropping an unreadable live message on %s: %s", self.queue, exc)
            self._broker.dropped += 1
            self._slot.ack([tag], self._slot.generation)
            return
        self._buffer.append(notification)
        self._tags.append(tag)
        self._ready.set()

    def overflow(self) -> None:
        self._overflowed = True
        self._ready.set()

    def suspend(self) -> None:
        """The channel is back but this queue is not yet: hold ``receive`` until ``restored``.

        The old channel's delivery tags die with it (the broker requeued or dropped those
        messages), so they are forgotten here, before the new channel delivers anything.
        """
        self._restoring = True
        self._tags.clear()
        self._unacked.clear()

    def restored(self) -> None:
        """The queue is declared, bound and consumed again: messages published while it was
        gone may be missing, so the next ``receive`` raises SubscriptionGap.

        The order matters: the gap is raised only once the binds exist, so the back-fill
        from history sees everything the live queue missed; and no delivery of the new
        queue is handed out before it, so the back-fill starts from the last offset the
        socket got before the drop.
        """
        self._restoring = False
        self._gap = True
        self._ready.set()

    async def receive(self) -> Sequence[Notification]:
        while True:
            if self._overflowed:
                raise SubscriptionOverflow(
                    f"more than {self._broker.settings.socket_queue_size} notifications waiting for one socket"
                )
            if not self._restoring:
                if self._gap:
                    self._gap = False
                    raise SubscriptionGap("the broker connection was restored; live messages may have been missed")
                if self._buffer:
                    break
            self._ready.clear()
            await self._ready.wait()
        batch, self._buffer = self._buffer, []
        self._unacked += self._tags
        self._tags = []
        return batch

    def ack(self) -> None:
        if self._unacked:
            self._slot.ack(self._unacked, self._generation)
            self._unacked = []

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._slot.subscriptions.pop(self.queue, None)
        channel = self._slot.underlay
        if channel is not None and not channel.is_closed:
            # Cancelling the only consumer deletes the auto-delete queue (and its messages).
            try:
                await channel.basic_cancel(self.queue, nowait=True)
            except aiormq.exceptions.AMQPError:
                log.debug("cancel of %s after its channel closed", self.queue)


class LiveBroker:
    """The Broker seam over RabbitMQ: confirmed publishes in, per-socket queues out."""

    def __init__(self, connection: AbstractRobustConnection, settings: Settings) -> None:
        self._connection = connection
        self.settings = settings
        self.bind_exchange = settings.live_exchange if settings.history_enabled else settings.exchange
        self.overflow_queue = f"hub.overflow.{uuid.uuid4().hex}"
        self._slots: list[_Slot] = []
        self._next = 0
        self._publish_channel: AbstractRobustChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self.dropped = 0
        self.overflows = 0
        self.restores = 0

    async def start(self) -> None:
        """Open the channel pool and the overflow consumer."""
        self._publish_channel = channel = await self._connection.channel(publisher_confirms=True)
        assert self._publish_channel is not None
        self._exchange = await channel.get_exchange(self.settings.exchange, ensure=False)
        for _ in range(CHANNEL_POOL):
            robust: AbstractRobustChannel = await self._connection.channel(publisher_confirms=False)
            await robust.set_qos(prefetch_count=self.settings.prefetch)
            slot = _Slot(robust)
            slot.reset(await robust.get_underlay_channel())
            robust.reopen_callbacks.add(self._reopened(slot))
            self._slots.append(slot)
        overflow = await self._slots[0].robust.declare_queue(self.overflow_queue, exclusive=True, auto_delete=True)
        await overflow.consume(self._on_overflow, no_ack=True)

    def _reopened(self, slot: _Slot) -> Callable[..., Any]:
        async def reopened(channel: Any) -> None:
            slot.reset(await slot.robust.get_underlay_channel())
            subscriptions = list(slot.subscriptions.values())
            self.restores += 1
            for subscription in subscriptions:
                subscription.suspend()
            results = await asyncio.gather(*(s.declare() for s in subscriptions), return_exceptions=True)
            for subscription, result in zip(subscriptions, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("could not restore %s: %s; closing it", subscription.queue, result)
                    subscription.overflow()  # the session closes (1013) and reconnects
                else:
                    subscription.restored()
            log.info("restored %d live queues after a channel reopen", len(subscriptions))

        return reopened

    async def _on_overflow(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        deaths = message.headers.get("x-death")
        if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
            return
        queue = deaths[0].get("queue")
        for slot in self._slots:
            subscription = slot.subscriptions.get(str(queue))
            if subscription is not None and not subscription._overflowed:
                self.overflows += 1
                subscription.overflow()

    async def close(self) -> None:
        """Nothing beyond the connection: closing it deletes every exclusive queue."""

    # ------------------------------------------------------------------ the seam

    async def publish(
        self, topic: str, data: Any, *, message_id: str | None = None, ttl: float | None = None
    ) -> Receipt:
        """Confirmed, persistent publish to ``notifications``; the sequencer assigns the offset."""
        assert self._exchange is not None
        message, id = wire.build_message(data, message_id=message_id, ttl=ttl)
        try:
            await self._exchange.publish(message, routing_key=topic, mandatory=False)
        except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
            raise BackendUnavailable(f"RabbitMQ did not confirm the publish: {exc!r}") from exc
        return Receipt(id, None)

    async def subscribe(self, topics: Sequence[str]) -> AmqpSubscription:
        slot = self._slots[self._next % len(self._slots)]
        self._next += 1
        parse = _parse_live if self.settings.history_enabled else _parse_direct
        subscription = AmqpSubscription(self, slot, topics, parse)
        try:
            await subscription.declare()
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            slot.subscriptions.pop(subscription.queue, None)
            raise BackendUnavailable(f"could not open a live queue: {exc!r}") from exc
        return subscription


def _parse_live(message: DeliveredMessage) -> Notification:
    return wire.parse_live(message.body)


def _parse_direct(message: DeliveredMessage) -> Notification:
    """History off: sockets read the publishers' messages themselves (at most once, no offset);
    one the hub cannot take raises ``wire.Refused`` and is dropped (no sequencer to dead-letter it)."""
    p = wire.read_publish(message.routing_key, message.header, message.body, now=now_ms())
    json_text = wire.json_frame(p.id, p.topic, None, p.ts, p.data_json)
    return wire.LiveNotification(id=p.id, topic=p.topic, offset=None, ts=p.ts, data=p.data, json_text=json_text)
