"""The distributed backend: RabbitMQ carries, Redis remembers (docs/protocol.md §1, §4-§6).

Wires one robust AMQP connection (topology, live broker, sequencer, presence events)
and one Redis client (history, presence). With ``HUB_HISTORY_SIZE=0`` there is no
history and no sequencer: sockets bind on the publishers' exchange directly.

Deadlines: start-up, readiness checks and every call on a request path take at most
``HUB_BACKEND_TIMEOUT`` seconds per service; past it (or at once when a connection is
known to be down) they raise BackendUnavailable, which sessions turn into 1013 and the
HTTP API into 503. Start-up failures name the service and its URL without password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any
from urllib.parse import urlsplit

import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from redis.exceptions import RedisClusterException, RedisError

from hub import amqp_decode, wire
from hub.backends import amqp_writes, redis_client
from hub.backends.base import BackendUnavailable, Presence
from hub.backends.batch_publish import BatchPublisher
from hub.backends.rabbitmq import LiveBroker
from hub.backends.redis_history import RedisHistory
from hub.backends.redis_presence import RedisPresence
from hub.backends.redis_reads import RedisReads
from hub.backends.sequencer import Sequencer
from hub.backends.shard_topology import declare_shards, ingest_queues
from hub.backends.shards import ShardCoordinator
from hub.backends.topology import declare_topology
from hub.read_frames import ReadEvent, event_body, read_key
from hub.settings import Settings, redact_url
from hub.tls import amqp_ssl_context, redis_ssl_options
from hubnotify.failover import FailoverConnection, split_urls

log = logging.getLogger("hub.distributed")

#: Seconds between aio-pika's reconnection attempts (its default, 5 s, is a long outage).
RECONNECT_INTERVAL = 1.0


class DistributedBackend:
    """RabbitMQ + Redis; chosen when HUB_AMQP_URL and HUB_REDIS_URL are both set.

    ``start`` raises when either service is unreachable; afterwards, outages are ridden
    out (aio-pika reconnects, the sequencer retries Redis) and reported by ``check``.
    """

    def __init__(self, settings: Settings) -> None:
        assert settings.amqp_url, "the distributed backend needs HUB_AMQP_URL"
        assert settings.redis_url, "the distributed backend needs HUB_REDIS_URL"
        self._settings = settings
        self._redis: redis_client.RedisClient = redis_client.connect(
            settings.redis_url,
            settings.backend_timeout,
            redis_ssl_options(settings),
            sentinels=settings.sentinel_addresses,
            master=settings.redis_master,
        )
        self._history = (
            RedisHistory(
                self._redis,
                prefix=settings.redis_prefix,
                size=settings.history_size,
                ttl=settings.history_ttl,
                timeout=settings.backend_timeout,
                writers=ingest_queues(settings),
            )
            if settings.history_enabled
            else None
        )
        self._reads = (
            RedisReads(
                self._redis,
                self._history,
                prefix=settings.redis_prefix,
                size=settings.history_size,
                ttl=settings.history_ttl,
                timeout=settings.backend_timeout,
                announce=self._announce_read,
            )
            if self._history is not None
            else None
        )
        self._presence = RedisPresence(
            self._redis,
            prefix=settings.redis_prefix,
            replica=settings.replica_id,
            ttl=settings.presence_ttl,
            on_transition=self._presence_event,
            timeout=settings.backend_timeout,
        )
        self._connection: AbstractRobustConnection | None = None
        self._broker: LiveBroker | None = None
        self._sequencer: Sequencer | None = None
        self._shards: ShardCoordinator | None = None  # HUB_INGEST_SHARDS > 1 (hub/backends/shards.py)
        self._events: AbstractRobustChannel | None = None  # presence and read events
        self._presence_events = BatchPublisher(settings.presence_exchange, wire.PRESENCE_PROPERTIES)
        self._read_events = BatchPublisher(settings.live_exchange, wire.READ_PROPERTIES)
        self._observer: AbstractRobustChannel | None = None
        self._ingest: tuple[int, int] | None = None  # hub.ingest: messages, consumers (last seen)

    @property
    def name(self) -> str:
        return "distributed"

    @property
    def broker(self) -> LiveBroker:
        assert self._broker is not None, "expected start() before use"
        return self._broker

    @property
    def history(self) -> RedisHistory | None:
        return self._history

    @property
    def presence(self) -> Presence:
        return self._presence

    @property
    def reads(self) -> RedisReads | None:
        return self._reads

    @property
    def sequencer(self) -> Sequencer | None:
        """This replica's sequencer (None when history is off); it may be a standby consumer."""
        return self._sequencer

    @property
    def connection(self) -> AbstractRobustConnection | None:
        return self._connection

    async def start(self) -> None:
        """Connect to Redis and RabbitMQ (each within ``backend_timeout``) and declare what is
        needed (within ``startup_timeout``); on failure release what was opened and raise BackendUnavailable
        with one line naming the service and its URL (without password)."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        settings = self._settings
        assert settings.amqp_url is not None
        assert settings.redis_url is not None
        async with _answering("Redis", settings.redis_url, settings.backend_timeout):
            await self._redis.ping()
        amqp_decode.install()  # no message can break the connection's frame reader (hub/amqp_decode.py)
        # Built here rather than by connect_robust, so that a failed first attempt can be
        # closed (its reconnection task stopped); ``timeout`` bounds every later attempt
        # too, so a reconnect to a port that accepts TCP and never speaks AMQP gives up.
        # One URL, or a cluster's nodes comma-separated: FailoverConnection moves between them.
        self._connection = connection = FailoverConnection(
            split_urls(settings.amqp_url),
            client_properties={"connection_name": f"hub {settings.replica_id}"},
            reconnect_interval=RECONNECT_INTERVAL,
            ssl_context=amqp_ssl_context(settings),
        )
        amqp_writes.install(connection)  # one write per loop turn, not one per frame
        async with _answering("RabbitMQ", settings.amqp_url, settings.backend_timeout):
            await connection.connect(timeout=settings.backend_timeout)
        # Declaring is many calls, and on a cluster each may wait for a queue leader's
        # election: the whole start-up's deadline, not one call's.
        async with _answering("RabbitMQ", settings.amqp_url, settings.startup_timeout):
            channel = await connection.channel()
            await declare_topology(channel, settings)
            if self._history is not None and settings.ingest_shards > 1:
                await declare_shards(channel, settings)  # first: a missing plugin closes the connection
            # Presence events are fire-and-forget (no confirm, no return): a connect must not
            # wait a broker round trip for an event nobody may be listening to.
            events = await connection.channel(publisher_confirms=False)
            self._events = events
            self._broker = LiveBroker(connection, settings)
            await self._broker.start()
            if self._history is not None and settings.ingest_shards > 1:
                self._shards = ShardCoordinator(connection, self._history, self._redis, settings)
                await self._shards.start()
            elif self._history is not None:
                self._sequencer = Sequencer(connection, self._history, settings)
                await self._sequencer.start()
            if self._history is not None:
                # its own channel: a passive declare of a queue that is gone closes the channel
                self._observer = await connection.channel(publisher_confirms=False)
        async with _answering("Redis", settings.redis_url, settings.backend_timeout):
            await self._presence.start()

    async def close(self) -> None:
        """Close each part within twice ``backend_timeout``: a part stuck on a sick peer is
        logged and left behind, so a replica always finishes shutting down."""
        limit = 2 * self._settings.backend_timeout
        if self._sequencer is not None:
            await _closed_within("the sequencer", self._sequencer.close(), limit)
            self._sequencer = None
        if self._shards is not None:
            await _closed_within("the shard coordinator", self._shards.close(), limit)
            self._shards = None
        await _closed_within("presence", self._presence.close(), limit)
        if self._broker is not None:
            await _closed_within("the live broker", self._broker.close(), limit)
        if self._connection is not None:
            await _closed_within("the RabbitMQ connection", self._connection.close(), limit)
            self._connection = None
        await _closed_within("the Redis client", redis_client.close(self._redis), limit)

    async def check(self) -> dict[str, str | None]:
        """Each service's health, both probed at once within ``backend_timeout``: RabbitMQ
        with a confirmed round trip (a stalled connection still looks connected), Redis
        with PING."""
        rabbitmq, redis = await asyncio.gather(self._check_rabbitmq(), self._check_redis())
        return {"rabbitmq": rabbitmq, "redis": redis}

    async def _check_rabbitmq(self) -> str | None:
        connection, broker = self._connection, self._broker
        if connection is None or broker is None or connection.is_closed or not connection.connected.is_set():
            assert self._settings.amqp_url is not None
            return f"not connected to RabbitMQ at {redact_url(self._settings.amqp_url)} (reconnecting)"
        try:
            await broker.probe()
        except BackendUnavailable as exc:
            return str(exc)
        return None

    async def _check_redis(self) -> str | None:
        try:
            async with redis_client.deadline("PING", self._settings.backend_timeout):
                await self._redis.ping()
        except BackendUnavailable as exc:
            return str(exc)
        return None

    def stats(self) -> dict[str, Any]:
        """Counters of the live path and the sequencer (for metrics and tests)."""
        stats: dict[str, Any] = {}
        if self._broker is not None:
            broker = self._broker
            stats.update(
                overflows=broker.overflows,
                dropped=broker.dropped,
                restore_failures=broker.restore_failures,
                outage_closes=broker.outage_closes,
                spare_queues=broker.spares.kept,
                spare_queue_reuses=broker.spares.reused,
            )
        if self._history is not None:
            stats["history_skipped"] = self._history.skipped
        if self._sequencer is not None:
            s = self._sequencer.stats
            stats.update(
                sequenced=s.sequenced,
                sequencer_batches=s.batches,
                duplicates=s.duplicates,
                dead_letters=dict(s.dead_letters),
                redis_retries=s.redis_retries,
                ingest_lag_seconds=s.last_lag_ms / 1000,
                sequencer_inflight=self._sequencer.inflight,
            )
        if self._shards is not None:
            stats.update(self._shards.stats())
        if self._ingest is not None:
            stats.update(ingest_backlog=self._ingest[0], ingest_consumers=self._ingest[1])
        return stats

    async def observe(self) -> None:
        """Read ``hub.ingest``'s length and consumer count (for metrics), within
        ``backend_timeout``; unknown (not exported) while RabbitMQ does not answer."""
        observer = self._observer
        if observer is None:
            return
        messages = consumers = 0
        try:
            async with asyncio.timeout(self._settings.backend_timeout):
                channel = await observer.get_underlay_channel()
                for queue in ingest_queues(self._settings):  # every shard, summed
                    declared = await channel.queue_declare(queue, passive=True)
                    messages += declared.message_count or 0
                    consumers += declared.consumer_count or 0
        except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            log.debug("could not read %s's length: %r", self._settings.ingest_queue, exc)
            self._ingest = None
            return
        self._ingest = (messages, consumers)

    async def _presence_event(self, user: str, online: bool) -> None:
        """``presence.online.<id>`` / ``presence.offline.<id>`` on ``hub.presence`` (docs/protocol.md §6).

        At most once: while RabbitMQ is away the event is dropped (raised as
        BackendUnavailable, which presence logs) rather than holding up the connect.
        """
        if self._events is None:
            return
        await self._send_event(self._presence_events, *wire.presence_event(user, online), "presence event dropped")

    async def _announce_read(self, event: ReadEvent) -> None:
        """A read change to every socket of its user, on every replica: the ``read`` event on the
        live exchange with the user's read key (hub/read_frames.py, docs/protocol.md §9).

        At most once, like presence events; raises BackendUnavailable when RabbitMQ does not
        take it within ``backend_timeout`` (the state is saved: a reconnect shows it).
        """
        await self._send_event(self._read_events, read_key(event.user), event_body(event), "read event not sent")

    async def _send_event(self, publisher: BatchPublisher, routing_key: str, body: bytes, failed: str) -> None:
        """One event on the events channel (no confirm), within ``backend_timeout``, or
        BackendUnavailable starting with ``failed``. Written as frames (hub.backends.batch_publish):
        no message object, lock wait or message id per event; a reconnect storm sends two
        presence events per socket."""
        events, connection = self._events, self._connection
        if events is None or connection is None or not connection.connected.is_set():
            raise BackendUnavailable(f"{failed}: not connected to RabbitMQ")
        timeout = self._settings.backend_timeout
        try:
            async with asyncio.timeout(timeout):
                channel = await events.get_underlay_channel()
                assert isinstance(channel, aiormq.Channel), f"expected an aiormq Channel, got {type(channel).__name__}"
                await publisher.send(channel, [(routing_key, body)])
        except TimeoutError as exc:
            raise BackendUnavailable(f"{failed}: RabbitMQ took more than {timeout:g} s") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BackendUnavailable(f"{failed}: {exc!r}") from exc


async def _closed_within(what: str, closing: Awaitable[None], seconds: float) -> None:
    """Await ``closing`` for at most ``seconds``; a failure or overrun is logged, not raised."""
    try:
        async with asyncio.timeout(seconds):
            await closing
    except TimeoutError:
        log.warning("closing %s took more than %g s; left behind", what, seconds)
    except Exception as exc:  # closing anyway: a broken part is as good as closed
        log.warning("closing %s failed: %r", what, exc)


@contextlib.asynccontextmanager
async def _answering(service: str, url: str, seconds: float) -> AsyncIterator[None]:
    """A start-up step: bounded by ``seconds``; any failure becomes one BackendUnavailable line
    naming ``service`` and ``url`` (password removed, also from the cause's text)."""
    where = f"{service} at {redact_url(url)}"
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise BackendUnavailable(f"{where} did not answer within {seconds:g} s") from exc
    except (OSError, RedisError, RedisClusterException, aiormq.exceptions.AMQPError, RuntimeError) as exc:
        reason = str(exc) or type(exc).__name__
        password = urlsplit(url).password
        if password:
            reason = reason.replace(password, "***")
        raise BackendUnavailable(f"{where} could not be used: {reason}") from exc
