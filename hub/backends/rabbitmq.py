"""RabbitMQ: the topology and the live path (docs/protocol.md §4, §5).

Each subscription (one socket) gets an exclusive, auto-delete queue bound to its topics
on ``notifications.live`` (or on ``notifications`` when history is off), consumed without
acks: the subscription's own buffer, bounded by ``socket_queue_size``, is where a socket
that falls behind is noticed (``hub.backends.live_queues``). The queue is bounded too, by
``x-max-length`` with ``x-overflow: drop-head``, for when this replica reads its
connection too slowly: dropped messages are dead-lettered through the default exchange
to this replica's overflow queue, whose consumer marks the subscription overflowed.

Cost per connect is one round trip: the queue declare and the binds are sent with
``nowait`` and the ``basic.consume`` that follows on the same channel is answered only
after them, so its reply (or the channel error) settles all three. A closed socket's
queue is kept a while for the next socket (``hub.backends.spare_queues``): its user coming
back takes it as it is, at no cost to the broker. Subscriptions share a small pool of
channels (RabbitMQ allows 2047 per connection); aiormq dispatches each
delivery by consumer tag, which is the queue name (``hub.backends.live_queues``).

Outages: ``publish`` and ``subscribe`` answer within ``backend_timeout`` (BackendUnavailable
past it, at once while disconnected). The connection is aio-pika's robust one: it reopens
the channels after a drop; each channel's ``reopen_callbacks`` then suspend its
subscriptions and a background restorer declares their queues again (fresh names), until
each is restored (it raises ``SubscriptionGap`` once, so the session back-fills from
history whatever the old, deleted queue held) or its deadline passes (it raises
``SubscriptionLost``: the socket is closed with 1013, never left open and silent).
With several node URLs the connection moves to another node of the cluster
(``hubnotify.failover``); while none answers, sockets are lost after
``broker_outage_close`` seconds (1013), not left silent. Publishes go through
``hubnotify.confirm`` (a nack: a fresh channel; with history on, ``mandatory``: a
returned message is published again), within ``backend_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from hub import wire
from hub.backends.base import BackendUnavailable, Receipt
from hub.backends.live_queues import AmqpSubscription, ChannelSlot
from hub.backends.spare_queues import SpareQueues
from hub.backends.topology import declare_topology as declare_topology  # re-exported: moved to topology.py
from hub.notification import Notification, now_ms
from hub.settings import Settings
from hubnotify.confirm import ConfirmingExchange

log = logging.getLogger("hub.rabbitmq")

CHANNEL_POOL = 8
#: A subscription not restored within this many ``backend_timeout`` is lost (1013).
RESTORE_DEADLINES = 3
#: Seconds between restore attempts: doubling from the first to the longest.
RESTORE_PAUSE_FIRST = 0.1
RESTORE_PAUSE_MAX = 1.0
#: The readiness probe's routing key on the default exchange: no queue has this name.
PROBE_KEY = "hub.readiness-probe"


class LiveBroker:
    """The Broker seam over RabbitMQ: confirmed publishes in, per-socket queues out.

    Every call on a request path (``publish``, ``subscribe``, ``probe``) takes at most
    ``settings.backend_timeout`` seconds and raises BackendUnavailable past it, or at
    once while the connection is down or the channel broken.
    """

    def __init__(self, connection: AbstractRobustConnection, settings: Settings) -> None:
        self._connection = connection
        self.settings = settings
        self.bind_exchange = settings.live_exchange if settings.history_enabled else settings.exchange
        self.overflow_queue = f"hub.overflow.{uuid.uuid4().hex}"
        self._slots: list[ChannelSlot] = []
        self.spares = SpareQueues(settings.spare_queues, settings.backend_timeout)
        self._next = 0
        self._publish_channel: AbstractRobustChannel | None = None
        self._confirming: ConfirmingExchange | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.overflows = 0
        self.restores = 0
        self.restore_failures = 0
        self.outage_closes = 0
        self._up = asyncio.Event()  # connected, channels restored (cleared when the connection drops)
        self._outage: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def restore_deadline(self) -> float:
        """Seconds a subscription may take to be restored after its channel reopened."""
        return RESTORE_DEADLINES * self.settings.backend_timeout

    async def start(self) -> None:
        """Open the channel pool and the overflow consumer."""
        self._confirming = ConfirmingExchange(self._open_exchange)
        await self._confirming.start()
        for _ in range(CHANNEL_POOL):
            # No basic.qos: socket queues are consumed without acks (live_queues), prefetch is moot.
            robust: AbstractRobustChannel = await self._connection.channel(publisher_confirms=False)
            slot = ChannelSlot(robust)
            slot.reset(await robust.get_underlay_channel())
            robust.reopen_callbacks.add(self._reopened(slot))
            self._slots.append(slot)
        overflow = await self._slots[0].robust.declare_queue(self.overflow_queue, exclusive=True, auto_delete=True)
        await overflow.consume(self._on_overflow, no_ack=True)
        if self.spares.limit > 0:
            self._spawn(self.spares.sweep(), "hub-sweep-spare-queues")
        self._up.set()
        self._connection.close_callbacks.add(self._dropped)
        self._connection.reconnect_callbacks.add(self._reconnected)

    def _dropped(self, *args: Any) -> None:
        """The connection to RabbitMQ dropped: sockets wait ``broker_outage_close`` seconds for
        a node to answer again (this one or another of the cluster), then are closed with 1013."""
        self._up.clear()
        if not self._closing and (self._outage is None or self._outage.done()):
            self._outage = self._spawn(self._outage_watch(), "hub-broker-outage")

    def _reconnected(self, *args: Any) -> None:
        self._up.set()

    async def _outage_watch(self) -> None:
        grace = self.settings.broker_outage_close
        try:
            async with asyncio.timeout(grace):
                await self._up.wait()
            return
        except TimeoutError:
            pass
        lost = [s for slot in self._slots for s in list(slot.subscriptions.values()) if not s.closed]
        log.warning("no RabbitMQ node answered for %g s: closing %d sockets with 1013", grace, len(lost))
        self.outage_closes += len(lost)
        for subscription in lost:
            subscription.lose(f"no RabbitMQ node reachable for {grace:g} s")

    async def _open_exchange(self) -> aio_pika.abc.AbstractExchange:
        """A confirming channel (returns raise) and its handle on ``notifications``; again when it nacks."""
        self._publish_channel = channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        return await channel.get_exchange(self.settings.exchange, ensure=False)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``work`` in the background, kept until done and awaited by ``close``."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("%s ended: %r", task.get_name(), task.exception())

    def _reopened(self, slot: ChannelSlot) -> Callable[..., Any]:
        async def reopened(channel: Any) -> None:
            # Only bookkeeping here: a declare that fails closes the channel, and aio-pika
            # does not reopen a channel that closes while its reopen callbacks run.
            slot.reset(await slot.robust.get_underlay_channel())
            self.restores += 1
            deadline = asyncio.get_running_loop().time() + self.restore_deadline
            for subscription in slot.subscriptions.values():
                subscription.suspend(deadline)
            if slot.subscriptions and (slot.restorer is None or slot.restorer.done()):
                slot.restorer = self._spawn(self._restore(slot), "hub-restore-live-queues")

        return reopened

    async def _restore(self, slot: ChannelSlot) -> None:
        """Declare the slot's suspended subscriptions again until each is back, or lost once
        its deadline passed: a socket is never left open and silent."""
        pause = RESTORE_PAUSE_FIRST
        loop = asyncio.get_running_loop()
        while True:
            waiting = [s for s in list(slot.subscriptions.values()) if s.restoring]
            now = loop.time()
            for subscription in waiting:
                if subscription.restore_by is not None and now >= subscription.restore_by:
                    self.restore_failures += 1
                    log.warning("could not restore %s; closing its socket", subscription.queue)
                    subscription.lose(
                        f"the live queue could not be restored within {self.restore_deadline:g} s"
                        " after a broker interruption"
                    )
            waiting = [s for s in waiting if s.restoring]
            if not waiting:
                return
            await self._redeclare(slot, waiting)
            if any(s.restoring for s in waiting):
                await asyncio.sleep(pause)
                pause = min(2 * pause, RESTORE_PAUSE_MAX)

    async def _redeclare(self, slot: ChannelSlot, subscriptions: list[AmqpSubscription]) -> None:
        """One attempt for every subscription, together; given up when the broker stops
        answering for ``backend_timeout`` (not when a long batch is still progressing)."""
        timeout = self.settings.backend_timeout
        loop = asyncio.get_running_loop()

        async def one(subscription: AmqpSubscription) -> None:
            try:
                await subscription.declare()
            except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                log.info("restoring %s failed (%r); retrying", subscription.queue, exc)
                return
            deadline.reschedule(loop.time() + timeout)
            if subscription.restoring and slot.generation == subscription._generation:
                subscription.restored()

        try:
            async with asyncio.timeout(timeout) as deadline:
                await asyncio.gather(*(one(s) for s in subscriptions))
        except TimeoutError:
            log.warning("RabbitMQ did not answer while restoring live queues; retrying")
        restored = sum(not s.restoring for s in subscriptions)
        log.info("restored %d of %d live queues after a channel reopen", restored, len(subscriptions))

    async def _on_overflow(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        """What a socket queue dropped (``x-max-length``): its subscription overflows, unless
        the message was routed by none of its topics (``x-death``'s ``routing-keys``): then
        it was for the socket whose queue it was before (``hub.backends.spare_queues``)."""
        deaths = message.headers.get("x-death")
        if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
            return
        queue, keys = deaths[0].get("queue"), deaths[0].get("routing-keys")
        routed = (
            [k.decode(errors="replace") if isinstance(k, bytes) else k for k in keys]
            if isinstance(keys, list)
            else None
        )
        for slot in self._slots:
            subscription = slot.subscriptions.get(str(queue))
            if subscription is None or subscription._overflowed:
                continue
            if routed is None or any(key in subscription.topics for key in routed):
                self.overflows += 1
                subscription.overflow()

    async def close(self) -> None:
        """Stop background work; closing the connection then deletes every exclusive queue."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _connected(self) -> None:
        """Fail at once while the connection is down: waiting would only reach the deadline."""
        if not self._connection.connected.is_set():
            raise BackendUnavailable("not connected to RabbitMQ (reconnecting)")

    async def probe(self) -> None:
        """One confirmed round trip on the publishing channel (for readiness): a message to
        the default exchange that no queue takes, so the broker drops it and confirms.
        Raises BackendUnavailable past ``backend_timeout``."""
        self._connected()
        assert self._publish_channel is not None
        timeout = self.settings.backend_timeout
        try:
            async with asyncio.timeout(timeout):
                exchange = self._publish_channel.default_exchange
                await exchange.publish(aio_pika.Message(b""), routing_key=PROBE_KEY, mandatory=False)
        except TimeoutError as exc:
            raise BackendUnavailable(f"RabbitMQ did not confirm a probe within {timeout:g} s") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BackendUnavailable(f"RabbitMQ did not confirm a probe: {exc!r}") from exc

    # ------------------------------------------------------------------ the seam

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> Receipt:
        """Confirmed, persistent publish to ``notifications``; the sequencer assigns the offset.

        Raises BackendUnavailable when the broker does not confirm within ``backend_timeout``:
        the message may still have been taken, so a retry should reuse ``message_id``. Within
        it, a nacked publish goes again on a fresh channel, and (history on: ``hub.ingest``
        takes every topic) a returned one again, as ``hubnotify.confirm`` says.
        """
        assert self._confirming is not None
        message, id = wire.build_message(data, message_id=message_id, ttl=ttl, priority=priority)
        self._connected()
        timeout = self.settings.backend_timeout
        mandatory = self.settings.history_enabled
        try:
            await self._confirming.publish(message, topic, mandatory=mandatory, seconds=timeout)
        except TimeoutError as exc:
            raise BackendUnavailable(f"RabbitMQ did not confirm the publish within {timeout:g} s") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BackendUnavailable(f"RabbitMQ did not confirm the publish: {exc!r}") from exc
        return Receipt(id, None)

    async def subscribe(self, topics: Sequence[str]) -> AmqpSubscription:
        """Open a socket's queue within ``backend_timeout``, or raise BackendUnavailable.

        The deadline is on the broker's silence: a declare queued behind others on a busy
        channel (a connect storm) waits as long as the channel keeps answering. A declare
        that outlives the deadline goes on in the background and cancels its consumer when
        the broker answers, so nothing is left behind.
        """
        self._connected()
        spare = self.spares.take(topics)  # taken here, not in declare: concurrent subscribes take different ones
        slot = spare.slot if spare is not None else self._usable_slot()
        parse = _parse_live if self.settings.history_enabled else _parse_direct
        subscription = AmqpSubscription(self, slot, topics, parse, spare)
        declaring = self._spawn(subscription.declare(), "hub-declare-live-queue")
        timeout = self.settings.backend_timeout
        try:
            await slot.progressing(declaring, timeout)
        except TimeoutError as exc:
            subscription.abandon()
            raise BackendUnavailable(f"RabbitMQ did not open a live queue within {timeout:g} s") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            subscription.abandon()
            raise BackendUnavailable(f"could not open a live queue: {exc!r}") from exc
        except BaseException:
            subscription.abandon()
            raise
        return subscription

    def _usable_slot(self) -> ChannelSlot:
        """The next pooled channel that is open, round robin."""
        self._connected()
        for _ in range(len(self._slots)):
            slot = self._slots[self._next % len(self._slots)]
            self._next += 1
            if slot.usable:
                return slot
        raise BackendUnavailable("no open channel to RabbitMQ (being reopened)")


def _parse_live(message: DeliveredMessage) -> Notification:
    return wire.parse_live(message.body)


def _parse_direct(message: DeliveredMessage) -> Notification:
    """History off: sockets read the publishers' messages themselves (at most once, no offset);
    one the hub cannot take raises ``wire.Refused`` and is dropped (no sequencer to dead-letter it)."""
    p = wire.read_publish(message.routing_key, message.header, message.body, now=now_ms())
    json_text = wire.json_frame(p.id, p.topic, None, p.ts, p.data_json)
    return wire.LiveNotification(id=p.id, topic=p.topic, offset=None, ts=p.ts, data=p.data, json_text=json_text)
