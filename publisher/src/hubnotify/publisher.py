"""Publishing from Python services over AMQP (docs/protocol.md §4).

``Publisher`` is the async helper: one robust connection, publisher confirms, persistent
messages, a message id on every message (so a retried publish is de-duplicated by the
hub's sequencer). ``BlockingPublisher`` (``hubnotify.blocking``) is its twin for sync
code (Django, Flask, scripts).

    async with Publisher("amqp://guest:guest@localhost/") as pub:
        await pub.publish(42, {"text": "hello"})

``connect`` declares the exchange (topic, durable: as the hub does), so the first publish
on a fresh RabbitMQ succeeds. A notification only goes somewhere once a hub has started
on that RabbitMQ (virtual host) at least once: the hub binds its ingest queue then, and
that durable queue keeps what is published while no hub runs. Before that, RabbitMQ
returns it (``mandatory``) and the helper raises ``Unroutable`` once ``timeout`` passed
(docs/protocol.md §4).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Protocol

import aiormq
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from hubnotify.confirm import ConfirmingExchange
from hubnotify.failover import connect_failover
from hubnotify.message import EXCHANGE, build_message, declare_exchange
from hubnotify.presence import DEFAULT_PREFIX, online_many_async, redis_client
from hubnotify.reads import HubReads
from hubnotify.topics import InvalidTopic, as_user_id, user_topic, validate_topic

#: Seconds ``connect`` and each publish (until confirmed) may take by default.
DEFAULT_TIMEOUT: Final = 30.0


class PublisherSettings(Protocol):
    """What ``from_settings`` reads; the hub's ``hub.settings.Settings`` has these fields."""

    @property
    def amqp_url(self) -> str | None: ...  # HUB_AMQP_URL
    @property
    def exchange(self) -> str: ...  # HUB_EXCHANGE
    @property
    def redis_url(self) -> str | None: ...  # HUB_REDIS_URL
    @property
    def redis_prefix(self) -> str: ...  # HUB_REDIS_PREFIX
    @property
    def backend_timeout(self) -> float: ...  # HUB_BACKEND_TIMEOUT


class Publisher:
    """Confirmed, persistent publishing to the hub's exchange; use as ``async with``.

    Every ``publish*`` returns once RabbitMQ confirmed the message, or raises:
    ``InvalidTopic`` for a bad user id or topic, ``ValueError`` for a bad id, ttl or
    payload (nothing was sent), ``TimeoutError`` when the broker did not confirm within
    ``timeout`` seconds, an aio-pika / aiormq error when it refused or the connection is
    down. After a timeout or a connection error the message may or may not have been
    taken: publish it again with the same ``message_id``, the hub de-duplicates.

    Within ``timeout`` a message is published again by the helper itself (same
    ``message_id``) when RabbitMQ nacks it or the connection drops, and, with
    ``mandatory`` (the default), when RabbitMQ returns it because no queue took it (the
    ingest queue's node is down); still returned at the deadline: ``hubnotify.confirm.Unroutable``.
    ``mandatory=False`` for a hub with ``HUB_HISTORY_SIZE=0``, whose sockets bind on the
    exchange themselves (a notification for nobody is returned). ``url`` may list a
    RabbitMQ cluster's nodes, comma-separated: the helper fails over between them
    (``hubnotify.failover``).

    User ids may be integers (``42`` publishes to ``user.42``). ``redis_url`` (the hub's
    ``HUB_REDIS_URL``) enables ``is_online`` / ``online_many``, which need the
    ``presence`` extra (redis-py).
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = EXCHANGE,
        persistent: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
        redis_url: str | None = None,
        redis_prefix: str = DEFAULT_PREFIX,
        ssl_context: ssl.SSLContext | None = None,
        redis_tls: Mapping[str, Any] | None = None,
        mandatory: bool = True,
        hub_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self._url = url
        self._mandatory = mandatory
        # read state over the hub's HTTP API (hubnotify.reads): its base URL and HUB_API_KEY
        self._reads = HubReads(hub_url, api_key=api_key or "", timeout=timeout or 30.0) if hub_url else None
        # amqps://: whom to trust and who we are (default: the system's CAs, no client certificate)
        self._ssl_context = ssl_context
        self._redis_tls = dict(redis_tls or {})  # redis-py's ssl_* options for a rediss:// redis_url
        self._exchange_name = exchange
        self._persistent = persistent
        self._timeout = timeout
        self._redis_url, self._redis_prefix = redis_url, redis_prefix  # for is_online / online_many
        self._redis: Any = None
        self._connection: AbstractRobustConnection | None = None
        self._exchange: ConfirmingExchange | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: PublisherSettings, *, persistent: bool = True) -> Publisher:
        """A publisher for the hub's configuration (``hub.settings.Settings.from_env(serving=False)``):
        its RabbitMQ and exchange, presence queries on its Redis when ``HUB_REDIS_URL`` is set,
        ``HUB_BACKEND_TIMEOUT`` as the deadline. Raises ValueError without an AMQP URL."""
        return cls(amqp_url(settings), **keywords(settings), persistent=persistent)

    async def connect(self) -> None:
        """Connect, declare the exchange and open a confirming channel; idempotent.

        On failure (RabbitMQ unreachable or refusing, no answer within ``timeout``) the
        connection is closed again before the error is raised: nothing is left running.
        A user allowed to write to the exchange but not to configure it (ACCESS_REFUSED on
        the declare) uses the exchange as a hub declared it; if none has, the broker's
        NOT_FOUND is raised.
        """
        async with self._connecting:  # two tasks connecting at once share one connection
            if self._connection is not None:
                return
            deadline = None if self._timeout is None else asyncio.get_running_loop().time() + self._timeout
            # aio-pika's own connect timeout, not a cancellation: a cancelled connect
            # schedules a reconnection of the connection it was making. Several
            # comma-separated URLs: the first node that answers, another when it dies.
            connection = await connect_failover(self._url, attempt_timeout=self._timeout, ssl_context=self._ssl_context)
            exchange = ConfirmingExchange(lambda: _open_exchange(connection, self._exchange_name))
            try:
                async with asyncio.timeout_at(deadline):
                    await exchange.start()
            except BaseException:
                await _close_quietly(connection)
                raise
            self._connection, self._exchange = connection, exchange

    async def close(self) -> None:
        """Close the connection (and the Redis client); idempotent."""
        connection, self._connection, self._exchange = self._connection, None, None
        redis, self._redis = self._redis, None
        try:
            if redis is not None:
                await redis.aclose()
        finally:
            if connection is not None:
                await connection.close()

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def publish(
        self,
        user: str | int,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> str:
        """Publish ``data`` (any JSON value) to ``user.<user>``; return the notification id.

        ``message_id`` is the de-duplication key (1-255 bytes, default: a new one); ``ttl``
        in seconds (at most a week) drops the notification if it waits longer to be sequenced;
        ``priority`` (0-9, default 0): an urgent notification (a 2FA code, a security alert)
        overtakes a backlog waiting to be sequenced (docs/protocol.md §5).
        """
        topic = user_topic(as_user_id(user))
        return await self.publish_topic(topic, data, message_id=message_id, ttl=ttl, priority=priority)

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
        routing_key = validate_topic(topic)
        message, id = build_message(
            data, message_id=message_id, ttl=ttl, priority=priority, persistent=self._persistent
        )
        await self._ready().publish(message, routing_key, mandatory=self._mandatory, seconds=self._timeout)
        return id

    async def publish_many(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Publish ``{"user"|"topic", "data", "id"?, "ttl"?, "priority"?}`` items, confirms awaited together.

        Every item is validated before anything is sent; returns the ids in order.
        """
        prepared = []
        for item in items:
            if ("user" in item) == ("topic" in item):
                raise InvalidTopic(f"expected exactly one of 'user' or 'topic' in {dict(item)!r:.80}")
            topic = user_topic(as_user_id(item["user"])) if "user" in item else validate_topic(item["topic"])
            message, id = build_message(
                item.get("data"),
                message_id=item.get("id"),
                ttl=item.get("ttl"),
                priority=item.get("priority"),
                persistent=self._persistent,
            )
            prepared.append((topic, message, id))
        exchange = self._ready()
        async with asyncio.timeout(self._timeout):
            await asyncio.gather(
                *(
                    exchange.publish(message, topic, mandatory=self._mandatory, seconds=self._timeout)
                    for topic, message, _ in prepared
                )
            )
        return [id for _, _, id in prepared]

    async def online_many(self, users: Iterable[str | int]) -> dict[str, bool]:
        """Each user → online on any replica (docs/protocol.md §6), read from Redis (``redis_url``);
        keyed by the user id as text.

        Raises InvalidTopic for a bad user id, ValueError when no ``redis_url`` was given,
        ModuleNotFoundError without the ``presence`` extra.
        """
        if self._redis is None:
            if self._redis_url is None:
                raise ValueError("expected Publisher(..., redis_url=HUB_REDIS_URL) for presence queries")
            self._redis = redis_client(self._redis_url, timeout=self._timeout, tls=self._redis_tls, asynchronous=True)
        return await online_many_async(self._redis, self._redis_prefix, users)

    async def is_online(self, user: str | int) -> bool:
        """Whether ``user`` has a live connection on any replica; see ``online_many``."""
        return (await self.online_many([user]))[as_user_id(user)]

    # Read state (docs/protocol.md §9): the hub's HTTP API, in a worker thread.

    async def unread(
        self, users: Iterable[str | int], topics: Sequence[str] | None = None
    ) -> dict[str, dict[str, int]]:
        """See ``hubnotify.reads.HubReads.unread``; needs ``hub_url`` and ``api_key``."""
        return await asyncio.to_thread(self._hub_reads().unread, list(users), topics)

    async def notifications(
        self, user: str | int, *, topic: str | None = None, before: str | None = None, limit: int = 50
    ) -> dict[str, Any]:
        """See ``hubnotify.reads.HubReads.notifications``."""
        reads = self._hub_reads()
        return await asyncio.to_thread(lambda: reads.notifications(user, topic=topic, before=before, limit=limit))

    async def mark_read(
        self, user: str | int, *, topic: str | None = None, up_to: str | None = None, offsets: Sequence[str] = ()
    ) -> dict[str, Any]:
        """See ``hubnotify.reads.HubReads.mark_read``."""
        reads = self._hub_reads()
        return await asyncio.to_thread(lambda: reads.mark_read(user, topic=topic, up_to=up_to, offsets=offsets))

    def _hub_reads(self) -> HubReads:
        if self._reads is None:
            raise RuntimeError("read state needs the hub's HTTP API: pass hub_url= and api_key=")
        return self._reads

    def _ready(self) -> ConfirmingExchange:
        if self._exchange is None:
            raise RuntimeError("expected 'await publisher.connect()' (or 'async with') before publishing")
        return self._exchange


async def _open_exchange(connection: AbstractRobustConnection, name: str) -> AbstractExchange:
    """A confirming channel's handle on the exchange ``name``, declared when the user may."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        return await declare_exchange(channel, name)
    except aiormq.exceptions.ChannelAccessRefused:
        # A publisher account with write but no configure permission: RabbitMQ closed the
        # channel; a passive declare on a new one needs no permission and finds the hub's.
        with contextlib.suppress(Exception):
            await channel.close()
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    return await channel.get_exchange(name)


async def _close_quietly(connection: AbstractRobustConnection) -> None:
    """Close a connection that failed half-way; its error is not the one worth raising."""
    with contextlib.suppress(Exception):
        await connection.close()


def amqp_url(settings: PublisherSettings) -> str:
    """``settings.amqp_url``, or ValueError naming HUB_AMQP_URL."""
    if not settings.amqp_url:
        raise ValueError("publishing over AMQP needs HUB_AMQP_URL (settings.amqp_url)")
    return settings.amqp_url


def keywords(settings: PublisherSettings) -> dict[str, Any]:
    """The keyword arguments of a publisher for ``settings``, the URL aside."""
    return {
        "exchange": settings.exchange,
        "redis_url": settings.redis_url,
        "redis_prefix": settings.redis_prefix,
        "timeout": settings.backend_timeout,
        "ssl_context": amqp_ssl_context(settings),
        "redis_tls": redis_tls_options(settings),
        # With history off, sockets bind on the exchange themselves: a notification for
        # nobody is returned, and that is not a reason to publish it again.
        "mandatory": bool(getattr(settings, "history_enabled", True)),
    }


def amqp_ssl_context(settings: PublisherSettings) -> ssl.SSLContext | None:
    """For an ``amqps://`` URL: a context trusting ``amqp_ca_file`` (default: the system's
    CAs) and presenting ``amqp_cert_file`` / ``amqp_key_file`` when set (the hub's
    ``HUB_AMQP_CA_FILE``, ``HUB_AMQP_CERT_FILE``, ``HUB_AMQP_KEY_FILE``). None for ``amqp://``."""
    if not (settings.amqp_url or "").startswith("amqps://"):
        return None
    context = ssl.create_default_context(cafile=getattr(settings, "amqp_ca_file", None))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    certificate = getattr(settings, "amqp_cert_file", None)
    if certificate:
        context.load_cert_chain(certificate, getattr(settings, "amqp_key_file", None) or None)
    return context


def redis_tls_options(settings: PublisherSettings) -> dict[str, Any]:
    """redis-py's ``ssl_*`` options for a ``rediss://`` URL (``redis_ca_file``,
    ``redis_cert_file``, ``redis_key_file`` when the settings have them); empty otherwise."""
    if not (settings.redis_url or "").startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if getattr(settings, "redis_ca_file", None):
        options["ssl_ca_certs"] = settings.redis_ca_file  # type: ignore[attr-defined]
    if getattr(settings, "redis_cert_file", None):
        options["ssl_certfile"] = settings.redis_cert_file  # type: ignore[attr-defined]
        options["ssl_keyfile"] = getattr(settings, "redis_key_file", None) or None
    return options
