"""Who is online, read straight from the hub's Redis — for backends, without going through a hub.

The blocking forms and ``Publisher.is_online`` need the ``presence`` extra
(``pip install 'notification-hub-publisher[presence]'``: redis-py); importing this module does not.

The same truth as ``GET /api/presence/{user}`` (docs/protocol.md §6): a connection counts
while its replica's lease in Redis is live, so a replica killed with SIGKILL stops
counting within ``HUB_PRESENCE_TTL`` even when no hub is running to reap it.

Async (``online_many_async``, ``is_online_async``: pass a ``redis.asyncio.Redis``) and
blocking (``online_many``, ``is_online``, ``connections_many``: a Redis URL) forms.
Nothing here reads the environment: pass the hub's ``HUB_REDIS_URL`` and
``HUB_REDIS_PREFIX`` (the prefix defaults to the hub's default). User ids may be
integers (``42`` → ``"42"``); results are keyed by the id as text.

The key layout is the hub's (``hub.backends.redis_presence``): ``<prefix>{presence}:``
(one hash slot for all of presence, so its scripts run on a Redis Cluster too) then
``replicas`` (a sorted set, lease deadline in ms per replica) and ``u:<user>`` (a hash,
connection → replica). ``COUNT_SCRIPT`` is the one script that counts; the
hub's presence backend runs the same text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from hubnotify.topics import as_user_id

if TYPE_CHECKING:  # redis-py is the ``presence`` extra: imported where a client is made
    import redis.asyncio as aioredis

#: ``HUB_REDIS_PREFIX``'s default.
DEFAULT_PREFIX: Final = "hub:"
#: Seconds a blocking query may take to connect and to answer (``HUB_BACKEND_TIMEOUT``'s default).
DEFAULT_TIMEOUT: Final = 3.0

# KEYS: replicas zset. ARGV: key prefix P, then user ids. Returns live counts, in order.
COUNT_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = {}
local alive = {}
for j = 2, #ARGV do
  local live = 0
  local conns = redis.call('HGETALL', ARGV[1] .. 'u:' .. ARGV[j])
  for i = 2, #conns, 2 do
    local r = conns[i]
    if alive[r] == nil then
      local deadline = redis.call('ZSCORE', KEYS[1], r)
      alive[r] = (deadline ~= false and deadline ~= nil and tonumber(deadline) >= now)
    end
    if alive[r] then live = live + 1 end
  end
  result[#result + 1] = live
end
return result
"""


def import_redis() -> ModuleType:
    """redis-py (with ``redis.asyncio``), or ModuleNotFoundError saying how to get it."""
    try:
        import redis
        import redis.asyncio
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "presence queries need redis-py: pip install 'notification-hub-publisher[presence]'", name="redis"
        ) from exc
    return redis


def redis_client(
    url: str, *, timeout: float | None, tls: Mapping[str, Any] | None = None, asynchronous: bool = False
) -> Any:
    """A redis-py client (``redis.asyncio``'s with ``asynchronous``) for the hub's ``HUB_REDIS_URL``:
    a ``RedisCluster`` for ``redis+cluster://[user:password@]host:port,host:port``, else
    ``Redis.from_url``. ``tls``: redis-py's ``ssl_*`` options for a ``rediss://`` URL."""
    redis = import_redis()
    module = redis.asyncio if asynchronous else redis
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **(tls or {})}
    parts = urlsplit(url)
    if parts.scheme != "redis+cluster":
        return module.Redis.from_url(url, **options)
    nodes = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.strip().rpartition(":")
        nodes.append(module.cluster.ClusterNode(host.strip("[]"), int(port)))
    return module.RedisCluster(
        startup_nodes=nodes,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        **options,
    )


def presence_keys(prefix: str) -> tuple[str, str]:
    """The key prefix ``P`` of presence and its replicas sorted set, for ``prefix``.

    ``{presence}`` is a hash tag: every presence key is in one slot of a Redis Cluster,
    where the scripts, which name users' and replicas' keys from ``P``, can reach them all.
    """
    base = f"{prefix}{{presence}}:"
    return base, base + "replicas"


def checked_users(users: Iterable[str | int]) -> list[str]:
    """``users`` as user ids (integers as text); InvalidTopic for one that is not valid."""
    return [as_user_id(user) for user in users]


async def count_users(
    client: aioredis.Redis | aioredis.RedisCluster, prefix: str, users: Iterable[str | int]
) -> dict[str, int]:
    """Live connections of each user across every replica, read straight from Redis.

    Usable without a running hub: a connection counts only while its replica's lease is
    live. Raises InvalidTopic for an invalid user id (before asking Redis).
    """
    checked = checked_users(users)
    if not checked:
        return {}
    base, replicas = presence_keys(prefix)
    counts = await client.eval(COUNT_SCRIPT, 1, replicas, base, *checked)
    return {user: int(c) for user, c in zip(checked, counts, strict=True)}


async def online_many_async(client: aioredis.Redis, prefix: str, users: Iterable[str | int]) -> dict[str, bool]:
    """Each user → online anywhere. Raises InvalidTopic for an invalid user id."""
    counts = await count_users(client, prefix, users)
    return {user: count > 0 for user, count in counts.items()}


async def is_online_async(client: aioredis.Redis, user: str | int, prefix: str = DEFAULT_PREFIX) -> bool:
    """Whether ``user`` has at least one live connection on any replica."""
    return (await count_users(client, prefix, [user]))[as_user_id(user)] > 0


def connections_many(
    users: Iterable[str | int],
    *,
    url: str,
    prefix: str = DEFAULT_PREFIX,
    timeout: float = DEFAULT_TIMEOUT,
    tls: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Blocking: each user → live connections, read from the Redis at ``url`` (``tls``:
    redis-py's ``ssl_*`` options for a ``rediss://`` URL; ``redis+cluster://`` for a cluster).

    Raises InvalidTopic for an invalid user id, a ``redis.exceptions.RedisError`` when
    Redis refuses or takes more than ``timeout`` seconds to connect or answer.
    """
    checked = checked_users(users)
    if not checked:
        return {}
    base, replicas = presence_keys(prefix)
    with redis_client(url, timeout=timeout, tls=tls) as client:
        counts = client.eval(COUNT_SCRIPT, 1, replicas, base, *checked)
    return {user: int(c) for user, c in zip(checked, counts, strict=True)}


def online_many(
    users: Iterable[str | int], *, url: str, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, bool]:
    """Blocking: each user → online anywhere; see ``connections_many``."""
    counts = connections_many(users, url=url, prefix=prefix, timeout=timeout)
    return {user: count > 0 for user, count in counts.items()}


def is_online(user: str | int, *, url: str, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Blocking: whether ``user`` has at least one live connection on any replica."""
    return connections_many([user], url=url, prefix=prefix, timeout=timeout)[as_user_id(user)] > 0
