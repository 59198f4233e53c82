"""The sequencer: ``hub.ingest`` → Redis stream (the offset) → ``notifications.live`` (docs/protocol.md §5).

One replica at a time consumes the ingest queue (single active consumer); when it dies
RabbitMQ hands the queue, unacknowledged messages first, to another. Work goes in
batches: whatever is buffered (at most ``PREFETCH`` messages) is read, appended in one
Redis script call, published live in one write with one future for all its confirms
(``hub.backends.batch_publish``), and acked with one ``multiple`` ack, which waits up to
``ACK_DELAY`` for the batches done after it to go with it (``hub.backends.delayed_ack``); with
``HUB_SEQUENCER_LINGER`` a batch's first message waits up to that long for others to
join it (a batch costs a Redis call and a confirm whatever its size). Nothing is acked
before its live publish is confirmed, so a crash anywhere means redelivery; redelivered
ids are already in the stream and keep their offset, and are published live again
(sessions drop offsets they already sent), because the crash may have come between the
append and the live publish.

Poison-proof: each message is read on its own (``hub.wire.read_publish``), and one the
hub cannot take goes to ``hub.dead`` with an ``x-hub-reason`` (``<kind>: <text>``)
instead of failing its batch. Messages are consumed as aiormq delivers them, below
aio-pika: no message object is built per message, and nothing stands between a frame
and this error handling (aio-pika only logs a callback that fails, leaving its message
unacked until a later ``multiple`` ack takes it silently). A batch can still fail as a
whole (Redis refusing a write, the live publish failing): its messages stay at the head
of the buffer, unacked, and are tried again one at a time, in order (never requeued:
messages behind them are already here and would overtake them), as are messages
delivered before (redelivered). Each such try is counted; a message tried
``delivery_limit`` times is dead-lettered (``delivery-limit``) instead of being tried
again. Counts live in this process: a replica that takes over starts them again. When
Redis is unreachable the batch is kept (not acked, not dropped) and retried with backoff
until Redis answers; that is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub import wire
from hub.backends import direct_dispatch
from hub.backends.batch_publish import BatchPublisher
from hub.backends.delayed_ack import DelayedAck
from hub.backends.redis_client import CLUSTER_AWAY
from hub.backends.redis_history import JSON_KIND, RedisHistory
from hub.backends.topology import declare_ingest
from hub.notification import now_ms
from hub.settings import Settings

log = logging.getLogger("hub.sequencer")

PREFETCH = 512
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
#: Redis errors that mean "not now" (retry the same batch in place), not "not this batch".
REDIS_AWAY: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OutOfMemoryError,
    ReadOnlyError,
    OSError,
    *CLUSTER_AWAY,
)
#: Messages whose delivery count is remembered at most (the oldest are forgotten first).
MAX_COUNTED = 10_000
#: A consume after a reconnect not answered within this many ``backend_timeout`` is tried again.
CONSUME_DEADLINES = 3
#: A batch's live publishes (and dead letters) unconfirmed after this many ``backend_timeout``:
#: the channel is taken for stuck and replaced, and the batch comes back redelivered.
CONFIRM_DEADLINES = 3
#: Seconds a done batch's ack waits for the next batches' to go with it (one ``multiple`` ack).
ACK_DELAY = 0.01
#: Seconds between checks that the Redis primary is still the one last swept (a failover).
PRIMARY_WATCH = 0.5
#: Topics whose newest offset is remembered to find lost history after a Redis failover
#: (``RedisHistory.mark_lost_tails``; the least recently written are forgotten first).
MAX_REMEMBERED = 10_000


class ConfirmTimeout(ConnectionError):
    """The broker confirmed neither ack nor nack of a batch's publishes in time."""


@dataclass(slots=True)
class SequencerStats:
    """Counters the metrics endpoint reads."""

    sequenced: int = 0
    duplicates: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    redis_retries: int = 0
    last_lag_ms: int = 0


class Sequencer:
    """Consumes the ingest queue while this replica is its single active consumer."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        history: RedisHistory,
        settings: Settings,
        *,
        queue: str | None = None,
        binding: tuple[str, str] | None = None,
        owner: bool = False,
    ) -> None:
        """``queue`` (default ``settings.ingest_queue``) is consumed; ``binding`` (exchange,
        routing key; default the publishers' exchange with ``#``) is what it is bound with
        again when the broker deleted it (a shard queue is bound to the hash exchange).
        ``owner``: this is the queue's designated sequencer (a shard's), not one of several
        single-active-consumer candidates; it vouches for the Redis primary from the start
        (``_watch_primary``), a candidate only once it has sequenced."""
        self._connection = connection
        self._queue = queue or settings.ingest_queue
        self._binding = binding or (settings.exchange, "#")
        self._draining = False
        self._idle = asyncio.Event()
        self._history = history
        self._settings = settings
        self._buffer: deque[DeliveredMessage] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resubscribing: asyncio.Task[None] | None = None
        self._consuming: asyncio.Task[None] | None = None
        self._failures = 0
        self._channel: AbstractRobustChannel | None = None
        self._consumer: tuple[aiormq.abc.AbstractChannel, str] | None = None  # (channel, tag)
        self._attempts: OrderedDict[str, int] = OrderedDict()
        self._newest: OrderedDict[str, str] = OrderedDict()  # topic → offset last appended
        self._check_lost = False  # Redis failed since: look for lost tails before appending
        self._sealed: str | None = None  # the primary this sequencer last vouched for (``_sweep``)
        self._owner = owner
        self._sweeping = asyncio.Lock()
        self._watching: asyncio.Task[None] | None = None
        self._careful = 0
        self._head_since = 0.0  # loop time the buffer's head arrived at, or a moment before (``_linger``)
        self._live = BatchPublisher(settings.live_exchange, wire.LIVE_PROPERTIES)
        self._acks = DelayedAck(ACK_DELAY)
        self.stats = SequencerStats()
        self.redis_error: str | None = None

    async def start(self) -> None:
        """Open the channel and start consuming; returns at once (the loop runs in a task).

        One channel both consumes ``hub.ingest`` and publishes to ``notifications.live``
        (with confirms): after a reconnect aio-pika restores it (its prefetch and the
        queue) and ``_consume`` runs again, so a batch is never delivered on a restored
        channel while its publishing channel is still the closed one.
        """
        self._channel = channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=PREFETCH)
        await declare_ingest(channel, self._settings, self._queue)
        await self._consume()
        channel.reopen_callbacks.add(self._reopened)
        self._task = asyncio.create_task(self._run(), name="hub-sequencer")
        self._watching = asyncio.create_task(self._watch_primary(), name="hub-sequencer-primary")

    async def _consume(self) -> None:
        assert self._channel is not None
        underlay = await self._channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(self._cancelled)
        if self._consumer is not None:  # a consumer the broker cancelled, or one on a closed channel
            direct_dispatch.forget(*self._consumer)
        tag = f"hub.sequencer.{uuid.uuid4().hex}"
        self._consumer = (underlay, tag)
        await direct_dispatch.consume(underlay, self._queue, self._on_message, consumer_tag=tag)

    async def _reopened(self, channel: Any) -> None:
        # In the background: aio-pika awaits this inside the connection's restore, and a
        # consume on a quorum queue without a leader yet (every node restarted) may never be
        # answered: awaited here, it would hold the whole connection, live path included.
        if self._task is not None and (self._consuming is None or self._consuming.done()):
            self._consuming = asyncio.create_task(self._consume_again(), name="hub-sequencer-consume")

    async def _consume_again(self) -> None:
        """Consume on the reopened channel, each try bounded (a cancelled consume closes the
        channel, which aio-pika reopens), until it is answered or the sequencer stops."""
        delay = RETRY_FIRST
        while self._task is not None:
            try:
                async with asyncio.timeout(CONSUME_DEADLINES * self._settings.backend_timeout):
                    await self._consume()
                return
            except Exception as exc:  # no answer, or the channel went: try again
                log.warning("could not consume %s again yet: %r", self._queue, exc)
                await asyncio.sleep(delay)  # backoff, not synchronisation
                delay = min(delay * 2, RETRY_MAX)

    async def _cancelled(self, frame: Any) -> None:
        """The broker cancelled the consumer (the queue was deleted): declare, bind, consume
        again, as aio-pika does for the consumers it restores itself."""
        if self._task is None or self._resubscribing is not None:
            return
        self._resubscribing = asyncio.create_task(self._resubscribe(), name="hub-sequencer-resubscribe")

    async def _resubscribe(self) -> None:
        assert self._channel is not None
        delay = RETRY_FIRST
        while self._task is not None:
            try:
                queue = await declare_ingest(self._channel, self._settings, self._queue)
                await queue.bind(*self._binding)
                await self._consume()
            except Exception as exc:  # the broker may be away too: try again
                log.warning("could not consume %s again: %r", self._queue, exc)
                await asyncio.sleep(delay)  # backoff, not synchronisation
                delay = min(delay * 2, RETRY_MAX)
            else:
                log.warning("consuming %s again after the broker cancelled it", self._queue)
                break
        self._resubscribing = None

    async def close(self) -> None:
        """Stop the loop and ack what is done (unacked messages go back to the queue for the
        next sequencer once the channel closes)."""
        for task in (self._resubscribing, self._consuming, self._task, self._watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._resubscribing = self._consuming = self._watching = None
        await self._acks.settle(self._settings.backend_timeout)  # what is done, before the channel goes

    async def stop(self, grace: float) -> None:
        """Hand the queue over: take no more deliveries, finish what was delivered (at most
        ``grace`` seconds), stop, and close the channel, which gives every message still
        unacked back to the queue (redelivered, first, to the next single active consumer).

        Cancelling the consumer first would not do: RabbitMQ makes the next consumer active
        at once, and it would sequence newer messages of a topic while this one still holds
        older ones.
        """
        self._draining = True
        if self._buffer:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        await self.close()
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.reopen_callbacks.discard(self._reopened)
            with contextlib.suppress(Exception):  # closing anyway: a broken channel is closed already
                await channel.close()

    @property
    def inflight(self) -> int:
        """Messages delivered to this sequencer and not yet done (sequenced or dead-lettered;
        the ack of what is done follows within ``ACK_DELAY``)."""
        return len(self._buffer)

    def _on_message(self, message: DeliveredMessage) -> None:
        """A delivery, in the channel's reader task (``direct_dispatch``): buffered for ``_run``."""
        if self._draining:
            return  # left unacked: the channel's close gives it back (``stop``)
        if not self._buffer and self._settings.sequencer_linger:
            self._head_since = asyncio.get_running_loop().time()
        self._buffer.append(message)
        self._ready.set()

    async def _run(self) -> None:
        """Messages leave the buffer, in order, only once done (sequenced or dead-lettered)."""
        buffer = self._buffer
        loop = asyncio.get_running_loop()
        while True:
            while not buffer:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
            await self._linger()
            while buffer and buffer[0].channel.is_closed:
                buffer.popleft()  # the broker requeued it with its channel; it comes back redelivered
                self._careful = max(0, self._careful - 1)
            if not buffer:
                continue
            if self._careful or buffer[0].redelivered:
                await self._one(buffer[0])
                continue
            batch = list(itertools.takewhile(lambda message: not message.redelivered, buffer))
            if self._settings.sequencer_linger:
                self._head_since = loop.time()  # what is buffered from now on arrived after this
            if await self._attempt(batch):
                for _ in batch:
                    buffer.popleft()
                self._failures = 0
            else:
                self._careful = len(batch)  # one of them failed it: each alone now
                await self._back_off()

    async def _linger(self) -> None:
        """Wait until the head of the buffer has waited ``sequencer_linger`` (never longer), unless
        a full batch is in or the sequencer is draining: more messages join the batch, and each
        batch costs a Redis call and a confirm whatever its size."""
        linger = self._settings.sequencer_linger
        if not linger or self._careful or self._draining or len(self._buffer) >= PREFETCH:
            return
        left = self._head_since + linger - asyncio.get_running_loop().time()
        if left > 0:
            await asyncio.sleep(left)  # lets the batch fill; bounded, not synchronisation

    async def _one(self, message: DeliveredMessage) -> None:
        """The head message alone: it failed a batch, or was delivered before, so it is counted."""
        key = _identity(message)
        attempt = self._attempts.get(key, 1) + 1
        limit = self._settings.delivery_limit
        dead = ("delivery-limit", f"tried {attempt - 1} times (delivery_limit {limit})") if attempt > limit else None
        if await self._attempt([message], dead):
            self._buffer.popleft()
            self._attempts.pop(key, None)
            self._careful = max(0, self._careful - 1)
            self._failures = 0
            return
        self._attempts[key] = min(attempt, limit)
        self._attempts.move_to_end(key)
        while len(self._attempts) > MAX_COUNTED:
            self._attempts.popitem(last=False)
        await self._back_off()

    async def _attempt(self, batch: list[DeliveredMessage], dead: tuple[str, str] | None = None) -> bool:
        """Process ``batch`` (dead-letter all of it with ``dead``); whether it was done.

        Not done, its messages stay unacked at the head of the buffer and are tried again
        (there is no requeue: messages behind them are already here, and would overtake).
        """
        try:
            await self._process(batch, dead)
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, RedisError) as exc:
            log.warning("sequencer batch of %d not done, will try again: %r", len(batch), exc)
            if isinstance(exc, aiormq.exceptions.DeliveryError | ConfirmTimeout):
                await self._replace_channel()
        except Exception:
            log.exception("sequencer batch of %d failed; will try again", len(batch))
        else:
            return True
        return False

    async def _replace_channel(self) -> None:
        """A publish was nacked, or not confirmed in time: a channel may nack every publish until
        it is replaced (one opened while a quorum queue elected its leader). Closing its
        underlay (within ``backend_timeout``) makes aio-pika reopen it (``_reopened`` consumes
        again); the batch's messages come back redelivered."""
        assert self._channel is not None
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError):
            async with asyncio.timeout(self._settings.backend_timeout):
                await (await self._channel.get_underlay_channel()).close()

    async def _back_off(self) -> None:
        self._failures += 1
        await asyncio.sleep(min(RETRY_FIRST * 2**self._failures, RETRY_MAX))  # backoff, not synchronisation

    async def _process(self, batch: list[DeliveredMessage], dead_reason: tuple[str, str] | None) -> None:
        now = now_ms()
        publishes: list[wire.Publish] = []
        dead: list[tuple[DeliveredMessage, str, str]] = []
        for message in batch:
            if dead_reason is not None:
                dead.append((message, *dead_reason))
                continue
            try:
                publishes.append(wire.read_publish(message.routing_key, message.header, message.body, now=now))
            except wire.Refused as exc:
                dead.append((message, exc.kind, exc.text))
            except Exception as exc:  # a bug must not fail the other messages of the batch
                log.exception("unexpected error reading an ingest message")
                dead.append((message, "unexpected", repr(exc)))
        # RabbitMQ hands out urgent messages first from what waits in hub.ingest; within a
        # batch already delivered, they go first too (stable: equal priorities keep their
        # order). Capped like RabbitMQ caps them; with priorities off, nothing moves.
        top = self._settings.ingest_max_priority
        if top > 0:
            publishes.sort(key=lambda p: -min(p.priority, top))
        self.stats.last_lag_ms = max(0, max((now - p.ts for p in publishes), default=0))
        entries = [(p.topic, p.id, p.ts, JSON_KIND, p.data_json.encode()) for p in publishes]
        results = await self._append(entries) if entries else []
        assert self._channel is not None
        live = await self._channel.get_underlay_channel()
        assert isinstance(live, aiormq.Channel), f"expected an aiormq Channel, got {type(live).__name__}"
        frames = [
            (p.topic, wire.json_frame(p.id, p.topic, offset, p.ts, p.data_json).encode())
            for p, (offset, _) in zip(publishes, results, strict=True)
        ]
        # One write and one confirmation future for the batch (no task, lock or future each).
        confirmed: Awaitable[object] = await self._live.publish(live, frames)
        if dead:
            confirms = [self._dead_letter(live, message, kind, text) for message, kind, text in dead]
            confirmed = asyncio.gather(confirmed, *confirms)
        limit = CONFIRM_DEADLINES * self._settings.backend_timeout
        try:
            async with asyncio.timeout(limit):
                await confirmed
        except TimeoutError:
            raise ConfirmTimeout(f"no confirm of {len(batch)} live publishes within {limit:g} s") from None
        self._acks.done(batch[-1])
        for _, kind, _ in dead:  # counted once done, not at each try
            self.stats.dead_letters[kind] = self.stats.dead_letters.get(kind, 0) + 1
        self.stats.batches += 1
        self.stats.sequenced += len(entries)
        self.stats.duplicates += sum(1 for _, dup in results if dup)

    async def _append(self, entries: list[tuple[str, str, int, bytes, bytes]]) -> list[tuple[str, bool]]:
        """Append with retries while Redis is away (not ack, not drop); other errors fail the batch.

        A failover can lose what the old primary had not replicated yet. Each append checks
        its own topics against the offsets this sequencer appended last; when one lost its
        tail, or when Redis was away, every topic appended lately is checked and marked
        (``RedisHistory.mark_lost_tails``) before the next append: a client is then told
        ``recovered: false`` rather than shown a gap (docs/operations.md §12).
        """
        delay = RETRY_FIRST
        while True:
            try:
                if self._check_lost or self._sealed is None:
                    await self._sweep()
                lost_before = self._history.lost_tails
                results = await self._history.append_batch(entries, self._newest)
                if self._history.lost_tails > lost_before:
                    self._check_lost = True
            except REDIS_AWAY as exc:
                self._check_lost = True
                self.redis_error = repr(exc)
                self.stats.redis_retries += 1
                if self.stats.redis_retries % 20 == 1:
                    log.warning("Redis unavailable for the sequencer, retrying: %r", exc)
                await asyncio.sleep(delay)  # backoff while Redis is away, not synchronisation
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.redis_error = None
            for (topic, *_), (offset, _) in zip(entries, results, strict=True):
                self._newest[topic] = offset
                self._newest.move_to_end(topic)
            while len(self._newest) > MAX_REMEMBERED:
                self._newest.popitem(last=False)
            if self._check_lost:  # a lost tail found: find the others now, not at the next batch
                with contextlib.suppress(*REDIS_AWAY):
                    await self._sweep()
            return results

    async def _sweep(self) -> None:
        """Mark every lost tail this sequencer knows of, then vouch for the primary it found
        them on (``RedisHistory.seal``): until then reads of it answer ``recovered: false``."""
        async with self._sweeping:
            primary = await self._history.primary_id()
            await self._history.mark_lost_tails(self._newest)
            self._check_lost = False
            if primary is not None:
                await self._history.seal(self._queue, primary)
            self._sealed = primary or ""

    async def _watch_primary(self) -> None:
        """Once this sequencer has sequenced (it is the active one), notice a new Redis primary
        (a failover, or a restarted server) within ``PRIMARY_WATCH`` seconds and sweep it,
        whether or not anything is published meanwhile."""
        while True:
            await asyncio.sleep(PRIMARY_WATCH)  # a polling interval, not synchronisation
            if (self._sealed is None and not self._owner) or self._draining:
                continue  # a standby candidate knows nothing to sweep for: it must not vouch
            try:
                primary = await self._history.primary_id()
                # a new primary, or the record gone (a flushed Redis keeps its replication id)
                if primary != (self._sealed or None) or (
                    primary is not None and await self._history.sealed_by(self._queue) != primary
                ):
                    await self._sweep()
            except Exception as exc:  # Redis away or anything else: never stop watching
                log.debug("Redis primary check failed, retrying: %r", exc)

    def _dead_letter(
        self, channel: aiormq.Channel, message: DeliveredMessage, kind: str, text: str
    ) -> Awaitable[object]:
        routing_key = message.routing_key
        log.warning("dead-lettering a message with routing key %r: %s: %s", routing_key, kind, text[:200])
        properties = wire.dead_letter_properties(message.header, routing_key, kind, text)
        return channel.basic_publish(
            message.body, exchange=self._settings.dead_letter, routing_key="dead", properties=properties, wait=False
        )


def _identity(message: DeliveredMessage) -> str:
    """What identifies a message across its deliveries: its id, else a digest of it."""
    message_id = message.header.properties.message_id
    if isinstance(message_id, str) and message_id:
        return "i:" + message_id
    digest = hashlib.blake2b(message.body, digest_size=16)
    digest.update((message.routing_key or "").encode("utf-8", "surrogateescape"))
    return "d:" + digest.hexdigest()
