"""The Redis client the distributed backend shares, and what its failures mean to callers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub.backends.base import BackendUnavailable

#: Seconds before a command or a connection attempt gives up: a Redis that went silent
#: (not just down) must not hang connects and API calls forever.
TIMEOUT = 5.0


def connect(url: str) -> aioredis.Redis:
    """A pooled client for ``url`` with bounded connect and command times."""
    return aioredis.Redis.from_url(url, decode_responses=False, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)


@contextlib.contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Turn Redis failures inside the block into BackendUnavailable (close 1013, HTTP 503)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"Redis did not answer ({what}): {exc!r}") from exc
