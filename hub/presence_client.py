"""Who is online, read straight from Redis — for backends, without going through a hub.

The same truth as ``GET /api/presence/{user}`` (docs/protocol.md §6): a connection counts
while its replica's lease in Redis is live, so a replica killed with SIGKILL stops
counting within ``HUB_PRESENCE_TTL`` even when no hub is running to reap it.

Async (``online_many_async``, ``is_online_async``: pass a ``redis.asyncio.Redis``) and
blocking (``online_many``, ``is_online``: a Redis URL) forms. Nothing here reads the
environment: pass ``settings.redis_url`` and ``settings.redis_prefix`` (``hub.settings``)
or your own values; the prefix defaults to the hub's default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from hub.backends.redis_presence import COUNT_SCRIPT, count_users, presence_keys
from hub.settings import DEFAULTS
from hub.topics import validate_user_id

DEFAULT_PREFIX = DEFAULTS.redis_prefix
DEFAULT_TIMEOUT = DEFAULTS.backend_timeout


def _checked(users: Sequence[str]) -> list[str]:
    return [validate_user_id(user) for user in users]


async def online_many_async(client: aioredis.Redis, prefix: str, users: Sequence[str]) -> dict[str, bool]:
    """Each user → online anywhere. Raises InvalidTopic for an invalid user id."""
    counts = await count_users(client, prefix, _checked(users))
    return {user: count > 0 for user, count in counts.items()}


async def is_online_async(client: aioredis.Redis, user: str, prefix: str = DEFAULT_PREFIX) -> bool:
    """Whether ``user`` has at least one live connection on any replica."""
    return (await online_many_async(client, prefix, [user]))[user]


def connections_many(
    users: Sequence[str],
    *,
    url: str,
    prefix: str = DEFAULT_PREFIX,
    timeout: float = DEFAULT_TIMEOUT,
    tls: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Blocking: each user → live connections, read from the Redis at ``url`` (``tls``:
    redis-py's ``ssl_*`` options for a ``rediss://`` URL, ``hub.tls.redis_ssl_options``).

    Raises InvalidTopic for an invalid user id, a ``redis.exceptions.RedisError`` when
    Redis refuses or takes more than ``timeout`` seconds to connect or answer.
    """
    checked = _checked(users)
    if not checked:
        return {}
    base, replicas = presence_keys(prefix)
    with redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, **(tls or {})) as client:
        counts = client.eval(COUNT_SCRIPT, 1, replicas, base, *checked)
    return {user: int(c) for user, c in zip(checked, counts, strict=True)}


def online_many(
    users: Sequence[str], *, url: str, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, bool]:
    """Blocking: each user → online anywhere; see ``connections_many``."""
    counts = connections_many(users, url=url, prefix=prefix, timeout=timeout)
    return {user: count > 0 for user, count in counts.items()}


def is_online(user: str, *, url: str, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Blocking: whether ``user`` has at least one live connection on any replica."""
    return online_many([user], url=url, prefix=prefix, timeout=timeout)[user]
