"""Who is online, read straight from Redis — for backends, without going through a hub.

The same truth as ``GET /api/presence/{user}`` (DESIGN.md §6): a connection counts
while its replica's lease in Redis is live, so a replica killed with SIGKILL stops
counting within ``HUB_PRESENCE_TTL`` even when no hub is running to reap it.

Async (``online_many_async``, ``is_online_async``: pass a ``redis.asyncio.Redis``) and
blocking (``online_many``, ``is_online``: a URL, default ``HUB_REDIS_URL``) forms.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import redis
import redis.asyncio as aioredis

from hub.backends.redis_presence import COUNT_SCRIPT, count_users, presence_keys
from hub.topics import validate_user_id

DEFAULT_PREFIX = "hub:"


def _prefix(prefix: str | None) -> str:
    return prefix if prefix is not None else os.environ.get("HUB_REDIS_PREFIX") or DEFAULT_PREFIX


def _checked(users: Sequence[str]) -> list[str]:
    return [validate_user_id(user) for user in users]


async def online_many_async(client: aioredis.Redis, prefix: str | None, users: Sequence[str]) -> dict[str, bool]:
    """Each user → online anywhere. Raises InvalidTopic for an invalid user id."""
    counts = await count_users(client, _prefix(prefix), _checked(users))
    return {user: count > 0 for user, count in counts.items()}


async def is_online_async(client: aioredis.Redis, user: str, prefix: str | None = None) -> bool:
    """Whether ``user`` has at least one live connection on any replica."""
    return (await online_many_async(client, prefix, [user]))[user]


def connections_many(users: Sequence[str], *, url: str | None = None, prefix: str | None = None) -> dict[str, int]:
    """Blocking: each user → live connections. ``url`` defaults to ``HUB_REDIS_URL``."""
    checked = _checked(users)
    if not checked:
        return {}
    url = url or os.environ.get("HUB_REDIS_URL")
    if not url:
        raise ValueError("expected a Redis URL: pass url= or set HUB_REDIS_URL")
    base, replicas = presence_keys(_prefix(prefix))
    with redis.Redis.from_url(url) as client:
        counts = client.eval(COUNT_SCRIPT, 1, replicas, base, *checked)
    return {user: int(c) for user, c in zip(checked, counts, strict=True)}


def online_many(users: Sequence[str], *, url: str | None = None, prefix: str | None = None) -> dict[str, bool]:
    """Blocking: each user → online anywhere."""
    return {user: count > 0 for user, count in connections_many(users, url=url, prefix=prefix).items()}


def is_online(user: str, *, url: str | None = None, prefix: str | None = None) -> bool:
    """Blocking: whether ``user`` has at least one live connection on any replica."""
    return online_many([user], url=url, prefix=prefix)[user]
