"""The distributed backend: RabbitMQ carries, Redis remembers (DESIGN.md §1, §4-§6).

Wires one robust AMQP connection (topology, live broker, sequencer, presence events)
and one Redis client (history, presence). With ``HUB_HISTORY_SIZE=0`` there is no
history and no sequencer: sockets bind on the publishers' exchange directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aio_pika
import redis.asyncio as aioredis
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from hub import amqp_decode, wire
from hub.backends import redis_client
from hub.backends.base import Presence
from hub.backends.rabbitmq import LiveBroker
from hub.backends.redis_history import RedisHistory
from hub.backends.redis_presence import RedisPresence
from hub.backends.sequencer import Sequencer
from hub.backends.topology import declare_topology
from hub.settings import Settings

log = logging.getLogger("hub.distributed")

CHECK_TIMEOUT = 2.0
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
        self._redis: aioredis.Redis = redis_client.connect(settings.redis_url)
        self._history = (
            RedisHistory(
                self._redis, prefix=settings.redis_prefix, size=settings.history_size, ttl=settings.history_ttl
            )
            if settings.history_enabled
            else None
        )
        self._presence = RedisPresence(
            self._redis,
            prefix=settings.redis_prefix,
            replica=settings.replica_id,
            ttl=settings.presence_ttl,
            on_transition=self._presence_event,
        )
        self._connection: AbstractRobustConnection | None = None
        self._broker: LiveBroker | None = None
        self._sequencer: Sequencer | None = None
        self._presence_exchange: AbstractExchange | None = None

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
    def sequencer(self) -> Sequencer | None:
        """This replica's sequencer (None when history is off); it may be a standby consumer."""
        return self._sequencer

    @property
    def connection(self) -> AbstractRobustConnection | None:
        return self._connection

    async def start(self) -> None:
        settings = self._settings
        assert settings.amqp_url is not None
        await self._redis.ping()
        amqp_decode.install()  # no message can break the connection's frame reader (hub/amqp_decode.py)
        self._connection = connection = await aio_pika.connect_robust(
            settings.amqp_url,
            reconnect_interval=RECONNECT_INTERVAL,
            client_properties={"connection_name": f"hub {settings.replica_id}"},
        )
        channel = await connection.channel()
        await declare_topology(channel, settings)
        # Presence events are fire-and-forget (no confirm, no return): a connect must not
        # wait a broker round trip for an event nobody may be listening to.
        events = await connection.channel(publisher_confirms=False)
        self._presence_exchange = await events.get_exchange(settings.presence_exchange, ensure=False)
        self._broker = LiveBroker(connection, settings)
        await self._broker.start()
        if self._history is not None:
            self._sequencer = Sequencer(connection, self._history, settings)
            await self._sequencer.start()
        await self._presence.start()

    async def close(self) -> None:
        if self._sequencer is not None:
            await self._sequencer.close()
            self._sequencer = None
        with contextlib.suppress(Exception):
            await self._presence.close()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        await self._redis.aclose()

    async def check(self) -> dict[str, str | None]:
        result: dict[str, str | None] = {}
        connection = self._connection
        if connection is None or connection.is_closed or not connection.connected.is_set():
            result["rabbitmq"] = "not connected to RabbitMQ (reconnecting)"
        else:
            result["rabbitmq"] = None
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._redis.ping()
            result["redis"] = None
        except Exception as exc:
            result["redis"] = f"Redis did not answer PING: {exc!r}"
        return result

    def stats(self) -> dict[str, Any]:
        """Counters of the live path and the sequencer (for metrics and tests)."""
        stats: dict[str, Any] = {}
        if self._broker is not None:
            stats.update(overflows=self._broker.overflows, dropped=self._broker.dropped)
        if self._history is not None:
            stats["history_skipped"] = self._history.skipped
        if self._sequencer is not None:
            s = self._sequencer.stats
            stats.update(
                sequenced=s.sequenced,
                duplicates=s.duplicates,
                dead_letters=dict(s.dead_letters),
                redis_retries=s.redis_retries,
                ingest_lag_seconds=s.last_lag_ms / 1000,
            )
        return stats

    async def _presence_event(self, user: str, online: bool) -> None:
        """``presence.online.<id>`` / ``presence.offline.<id>`` on ``hub.presence`` (DESIGN.md §6)."""
        exchange = self._presence_exchange
        if exchange is None:
            return
        routing_key, message = wire.presence_event(user, online)
        await exchange.publish(message, routing_key=routing_key, mandatory=False)
