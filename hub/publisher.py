"""Publishing from Python services over AMQP (DESIGN.md §4).

``Publisher`` is the async helper: one robust connection, publisher confirms, persistent
messages, a message id on every message (so a retried publish is de-duplicated by the
sequencer). ``BlockingPublisher`` is its twin for sync code (Django, Flask, scripts): it
runs a ``Publisher`` on an event loop in a background thread.

    async with Publisher("amqp://guest:guest@localhost/") as pub:
        await pub.publish("42", {"text": "hello"})

    with BlockingPublisher("amqp://guest:guest@localhost/") as pub:
        pub.publish("42", {"text": "hello"})
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from hub.settings import DEFAULTS, ConfigError, Settings
from hub.topics import InvalidTopic, user_topic, validate_topic
from hub.wire import build_message

T = TypeVar("T")


class Publisher:
    """Confirmed, persistent publishing to the hub's exchange; use as ``async with``.

    Every ``publish*`` returns once RabbitMQ confirmed the message (it is then durable in
    ``hub.ingest``), or raises (``InvalidTopic`` for a bad user id or topic, an aio-pika
    error when the broker refused or the connection is down).

    Build it from the hub's configuration with ``Publisher.from_settings(Settings.from_env(serving=False))``
    or with explicit values; the defaults are the hub's (``hub.settings.DEFAULTS``).
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = DEFAULTS.exchange,
        persistent: bool = True,
        redis_url: str | None = None,
        redis_prefix: str = DEFAULTS.redis_prefix,
        ssl_context: ssl.SSLContext | None = None,
        redis_tls: Mapping[str, Any] | None = None,
    ) -> None:
        self._url = url
        self._redis_tls = dict(redis_tls or {})  # redis-py ssl_* options for rediss:// (hub.tls)
        self._ssl_context = ssl_context  # for amqps:// (hub.tls.amqp_ssl_context); None: the system's CAs
        self._redis_url, self._redis_prefix = redis_url, redis_prefix  # for is_online / online_many
        self._redis: Any = None
        self._exchange_name = exchange
        self._delivery_mode = aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, persistent: bool = True) -> Publisher:
        """A publisher for ``settings``' RabbitMQ (``HUB_AMQP_URL``) and exchange, with presence
        queries on its Redis when ``HUB_REDIS_URL`` is set. Raises ConfigError without an AMQP URL."""
        return cls(_amqp_url(settings), **_keywords(settings), persistent=persistent)

    async def connect(self) -> None:
        """Open the connection and a confirming channel; the exchange must exist (the hub declares it)."""
        if self._connection is not None:
            return
        self._connection = await aio_pika.connect_robust(self._url, ssl_context=self._ssl_context)
        channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.get_exchange(self._exchange_name)

    async def close(self) -> None:
        """Close the connection; idempotent."""
        connection, self._connection, self._exchange = self._connection, None, None
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose()
        if connection is not None:
            await connection.close()

    async def online_many(self, users: Iterable[str]) -> dict[str, bool]:
        """Each user → online on any replica (DESIGN.md §6), read from Redis (``redis_url``).

        Raises InvalidTopic for a bad user id, ValueError when no ``redis_url`` was given.
        """
        from hub.presence_client import online_many_async

        if self._redis is None:
            if self._redis_url is None:
                raise ValueError("expected Publisher(..., redis_url=HUB_REDIS_URL) for presence queries")
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(self._redis_url, **self._redis_tls)
        return await online_many_async(self._redis, self._redis_prefix, list(users))

    async def is_online(self, user: str) -> bool:
        """Whether ``user`` has a live connection on any replica; see ``online_many``."""
        return (await self.online_many([user]))[user]

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def publish(
        self,
        user: str,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> str:
        """Publish ``data`` (any JSON value) to ``user.<user>``; return the notification id.

        ``priority`` (0-9, default 0): an urgent notification (a 2FA code, a security
        alert) overtakes a backlog waiting to be sequenced (docs/protocol.md §5).
        """
        return await self.publish_topic(user_topic(user), data, message_id=message_id, ttl=ttl, priority=priority)

    async def publish_topic(
        self,
        topic: str,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> str:
        """Publish to any topic (e.g. ``broadcast``); return the notification id."""
        message, id = _message(validate_topic(topic), data, message_id, ttl, priority, self._delivery_mode)
        await self._ready().publish(message, routing_key=topic, mandatory=False)
        return id

    async def publish_many(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Publish ``{"user"|"topic", "data", "id"?, "ttl"?, "priority"?}`` items, confirms awaited together.

        Every item is validated before anything is sent; returns the ids in order.
        """
        prepared = []
        for item in items:
            if ("user" in item) == ("topic" in item):
                raise InvalidTopic(f"expected exactly one of 'user' or 'topic' in {dict(item)!r:.80}")
            topic = user_topic(item["user"]) if "user" in item else validate_topic(item["topic"])
            message = _message(
                topic, item.get("data"), item.get("id"), item.get("ttl"), item.get("priority"), self._delivery_mode
            )
            prepared.append((topic, *message))
        exchange = self._ready()
        await asyncio.gather(
            *(exchange.publish(message, routing_key=topic, mandatory=False) for topic, message, _ in prepared)
        )
        return [id for _, _, id in prepared]

    def _ready(self) -> AbstractExchange:
        if self._exchange is None:
            raise RuntimeError("expected 'await publisher.connect()' (or 'async with') before publishing")
        return self._exchange


def _message(
    topic: str,
    data: Any,
    message_id: str | None,
    ttl: float | None,
    priority: int | None,
    mode: aio_pika.DeliveryMode,
) -> tuple[aio_pika.Message, str]:
    """The message for ``data`` and its id, built by ``hub.wire`` (ValueError for a bad id, ttl or priority)."""
    persistent = mode == aio_pika.DeliveryMode.PERSISTENT
    return build_message(data, message_id=message_id, ttl=ttl, priority=priority, persistent=persistent)


class BlockingPublisher:
    """``Publisher`` for sync code: calls block until the broker confirmed.

    A daemon thread runs the event loop; the instance is safe to share between threads.
    Call ``close`` (or use ``with``) to stop the thread and the connection.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = DEFAULTS.exchange,
        persistent: bool = True,
        timeout: float = 30.0,
        redis_url: str | None = None,
        redis_prefix: str = DEFAULTS.redis_prefix,
        ssl_context: ssl.SSLContext | None = None,
        redis_tls: Mapping[str, Any] | None = None,
    ) -> None:
        self._timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hub-publisher", daemon=True)
        self._thread.start()
        self._publisher = Publisher(
            url,
            exchange=exchange,
            persistent=persistent,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            ssl_context=ssl_context,
            redis_tls=redis_tls,
        )
        try:
            self._call(self._publisher.connect())
        except BaseException:
            self._stop()
            raise

    @classmethod
    def from_settings(
        cls, settings: Settings, *, persistent: bool = True, timeout: float | None = None
    ) -> BlockingPublisher:
        """See ``Publisher.from_settings``; ``timeout`` (each call's deadline) defaults to
        ``HUB_BACKEND_TIMEOUT``."""
        timeout = settings.backend_timeout if timeout is None else timeout
        return cls(_amqp_url(settings), **_keywords(settings), persistent=persistent, timeout=timeout)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self._timeout)

    def publish(
        self,
        user: str,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> str:
        """See ``Publisher.publish``."""
        return self._call(self._publisher.publish(user, data, message_id=message_id, ttl=ttl, priority=priority))

    def publish_topic(
        self,
        topic: str,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> str:
        """See ``Publisher.publish_topic``."""
        return self._call(self._publisher.publish_topic(topic, data, message_id=message_id, ttl=ttl, priority=priority))

    def publish_many(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """See ``Publisher.publish_many``."""
        return self._call(self._publisher.publish_many(list(items)))

    def online_many(self, users: Iterable[str]) -> dict[str, bool]:
        """See ``Publisher.online_many``."""
        return self._call(self._publisher.online_many(list(users)))

    def is_online(self, user: str) -> bool:
        """See ``Publisher.is_online``."""
        return self._call(self._publisher.is_online(user))

    def close(self) -> None:
        """Close the connection and stop the thread; idempotent."""
        if self._thread.is_alive():
            try:
                self._call(self._publisher.close())
            finally:
                self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout)
        self._loop.close()

    def __enter__(self) -> BlockingPublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _amqp_url(settings: Settings) -> str:
    if not settings.amqp_url:
        raise ConfigError("publishing over AMQP needs HUB_AMQP_URL")
    return settings.amqp_url


def _keywords(settings: Settings) -> dict[str, Any]:
    from hub.tls import amqp_ssl_context, redis_ssl_options

    return {
        "exchange": settings.exchange,
        "redis_url": settings.redis_url,
        "redis_prefix": settings.redis_prefix,
        "ssl_context": amqp_ssl_context(settings),
        "redis_tls": redis_ssl_options(settings),
    }
