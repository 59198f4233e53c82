"""The sequencer: ``hub.ingest`` → Redis stream (the offset) → ``notifications.live`` (DESIGN.md §5).

One replica at a time consumes the ingest queue (single active consumer); when it dies
RabbitMQ hands the queue, unacknowledged messages first, to another. Work goes in
batches: whatever is buffered (at most ``PREFETCH`` messages) is decoded, appended in
one Redis script call, published live with every confirm awaited together, and acked
with one ``multiple`` ack. Nothing is acked before its live publish is confirmed, so a
crash anywhere means redelivery; redelivered ids are already in the stream and keep
their offset, and are published live again (sessions drop offsets they already sent),
because the crash may have come between the append and the live publish.

Bad input never stops the loop: an invalid routing key or an unreadable body goes to
``hub.dead`` with an ``x-hub-reason`` header. When Redis is down the batch is kept
(not acked, not dropped) and retried with backoff until Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field

import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from pamqp.commands import Basic
from redis.exceptions import RedisError

from hub.backends.amqp_codec import Unreadable, decode_body, json_frame
from hub.backends.rabbitmq import REASON_HEADER, declare_ingest
from hub.backends.redis_history import JSON_KIND, RedisHistory
from hub.notification import new_id, now_ms
from hub.settings import Settings
from hub.topics import InvalidTopic, validate_topic

log = logging.getLogger("hub.sequencer")

PREFETCH = 512
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
LIVE_PROPERTIES = Basic.Properties(content_type="application/json", delivery_mode=1)


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

    def __init__(self, connection: AbstractRobustConnection, history: RedisHistory, settings: Settings) -> None:
        self._connection = connection
        self._history = history
        self._settings = settings
        self._buffer: deque[AbstractIncomingMessage] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._channel: AbstractRobustChannel | None = None
        self.stats = SequencerStats()
        self.redis_error: str | None = None

    async def start(self) -> None:
        """Open the channel and start consuming; returns at once (the loop runs in a task).

        One channel both consumes ``hub.ingest`` and publishes to ``notifications.live``
        (with confirms): after a reconnect aio-pika restores it as one, so a batch can
        never be delivered on a restored channel while its publishing channel is still
        the closed one.
        """
        self._channel = channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await declare_ingest(channel, self._settings)
        await queue.consume(self._on_message)
        self._task = asyncio.create_task(self._run(), name="hub-sequencer")

    async def close(self) -> None:
        """Stop the loop (unacked messages go back to the queue for the next sequencer)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._buffer.append(message)
        self._ready.set()

    async def _run(self) -> None:
        while True:
            while not self._buffer:
                self._ready.clear()
                await self._ready.wait()
            batch = list(self._buffer)
            self._buffer.clear()
            try:
                await self._process(batch)
            except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                log.warning("sequencer batch of %d not done, requeued: %r", len(batch), exc)
                await self._requeue(batch)
            except Exception:
                log.exception("sequencer batch of %d failed; requeued", len(batch))
                await self._requeue(batch)
            else:
                self._failures = 0

    async def _requeue(self, batch: list[AbstractIncomingMessage]) -> None:
        """Give a failed batch back to the queue, then back off before the next one.

        On a live channel the batch is nacked (requeued in order, for us or the next
        active consumer); on a dead one the broker requeues it by itself. Messages already
        appended keep their offset when they come back (de-duplication by id).
        """
        with contextlib.suppress(Exception):
            await batch[-1].nack(multiple=True, requeue=True)
        self._failures += 1
        await asyncio.sleep(min(RETRY_FIRST * 2**self._failures, RETRY_MAX))  # backoff, not synchronisation

    async def _process(self, batch: list[AbstractIncomingMessage]) -> None:
        entries: list[tuple[str, str, int, bytes, bytes]] = []
        json_data: list[str] = []
        dead: list[tuple[AbstractIncomingMessage, str, str]] = []
        now = now_ms()
        lag = 0
        for message in batch:
            try:
                topic = validate_topic(message.routing_key)
            except InvalidTopic as exc:
                dead.append((message, "invalid-topic", f"invalid routing key: {exc}"))
                continue
            try:
                data_json, _ = decode_body(message.body, message.content_type)
            except Unreadable as exc:
                dead.append((message, "unreadable", f"unreadable body: {exc}"))
                continue
            ts = (message.headers or {}).get("ts")
            ts = ts if isinstance(ts, int) and not isinstance(ts, bool) else now
            id = message.message_id or new_id()
            entries.append((topic, id, ts, JSON_KIND, data_json.encode()))
            json_data.append(data_json)
            lag = max(lag, now - ts)
        self.stats.last_lag_ms = lag
        results = await self._append(entries) if entries else []
        assert self._channel is not None
        live = await self._channel.get_underlay_channel()
        confirms: list[Awaitable[object]] = [
            live.basic_publish(
                json_frame(id, topic, offset, ts, data_json).encode(),
                exchange=self._settings.live_exchange,
                routing_key=topic,
                properties=LIVE_PROPERTIES,
            )
            for (topic, id, ts, _, _), data_json, (offset, _) in zip(entries, json_data, results, strict=True)
        ]
        for message, kind, reason in dead:
            self.stats.dead_letters[kind] = self.stats.dead_letters.get(kind, 0) + 1
            confirms.append(self._dead_letter(live, message, reason))
        await asyncio.gather(*confirms)
        await batch[-1].ack(multiple=True)
        self.stats.batches += 1
        self.stats.sequenced += len(entries)
        self.stats.duplicates += sum(1 for _, dup in results if dup)

    async def _append(self, entries: list[tuple[str, str, int, bytes, bytes]]) -> list[tuple[str, bool]]:
        """Append with retries: Redis down means wait (not ack, not drop), then go on."""
        delay = RETRY_FIRST
        while True:
            try:
                results = await self._history.append_batch(entries)
            except (RedisError, OSError) as exc:
                self.redis_error = repr(exc)
                self.stats.redis_retries += 1
                if self.stats.redis_retries % 20 == 1:
                    log.warning("Redis unavailable for the sequencer, retrying: %r", exc)
                await asyncio.sleep(delay)  # backoff while Redis is away, not synchronisation
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.redis_error = None
            return results

    def _dead_letter(
        self, channel: aiormq.abc.AbstractChannel, message: AbstractIncomingMessage, reason: str
    ) -> asyncio.Future[object]:
        log.warning("dead-lettering a message with routing key %r: %s", message.routing_key, reason)
        headers = dict(message.headers or {})
        headers[REASON_HEADER] = reason
        headers["x-hub-routing-key"] = message.routing_key or ""
        properties = Basic.Properties(
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            message_id=message.message_id,
            delivery_mode=2,
            headers=headers,
        )
        return asyncio.ensure_future(
            channel.basic_publish(
                message.body, exchange=self._settings.dead_letter, routing_key="dead", properties=properties
            )
        )
