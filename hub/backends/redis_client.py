"""The Redis client the distributed backend shares, and what its failures mean to callers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub.backends.base import BackendUnavailable

#: Connections per replica. A connect storm queues for them instead of failing: redis-py's
#: default pool refuses the 101st concurrent command ("Too many connections").
MAX_CONNECTIONS = 64


def connect(url: str, timeout: float, tls: Mapping[str, Any] | None = None) -> aioredis.Redis:
    """A client for ``url`` over a bounded, blocking pool; ``tls`` holds redis-py's ``ssl_*``
    options for a ``rediss://`` URL (``hub.tls.redis_ssl_options``).

    ``timeout`` (``settings.backend_timeout``) bounds a connection attempt, each read and
    the wait for a free pooled connection, so a Redis that went silent (not just down)
    cannot hang background work either; request paths also wrap their calls in
    ``deadline``, which bounds the whole call, redis-py's own retries included.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **(tls or {}),
    )
    return aioredis.Redis.from_pool(pool)


@contextlib.asynccontextmanager
async def deadline(what: str, seconds: float) -> AsyncIterator[None]:
    """Bound the block by ``seconds`` and turn Redis failures inside it into BackendUnavailable
    (close 1013, HTTP 503), naming ``what`` was asked.

    A command cancelled by the deadline is safe: redis-py drops the connection it was
    using instead of reading a late answer on it.
    """
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:  # the deadline, or a socket timeout inside it
        raise BackendUnavailable(f"Redis did not answer ({what}) within {seconds:g} s") from exc
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"Redis did not answer ({what}): {exc!r}") from exc
