"""The Redis client the distributed backend shares, and what its failures mean to callers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub.backends.base import BackendUnavailable

#: Seconds before a command, a connection attempt or the wait for a free pooled
#: connection gives up: a Redis that went silent (not just down) must not hang connects
#: and API calls forever.
TIMEOUT = 5.0
#: Connections per replica. A connect storm queues for them instead of failing: redis-py's
#: default pool refuses the 101st concurrent command ("Too many connections").
MAX_CONNECTIONS = 64


def connect(url: str) -> aioredis.Redis:
    """A client for ``url`` over a bounded, blocking pool, with bounded connect and command times."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=TIMEOUT,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
    )
    return aioredis.Redis.from_pool(pool)


@contextlib.contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Turn Redis failures inside the block into BackendUnavailable (close 1013, HTTP 503)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"Redis did not answer ({what}): {exc!r}") from exc
