"""The Redis client the distributed backend shares, and what its failures mean to callers.

Three deployments, one client type for the rest of the hub (``RedisClient``):

- one Redis (``redis://`` / ``rediss://``);
- a Redis Cluster, named by the scheme ``redis+cluster://[user:password@]host:port,host:port``
  (any reachable node: the client learns the others and the slot map from it). A scheme
  rather than a flag: the one value every tool is handed (``HUB_REDIS_URL``) then says
  what it names, and no tool can mistake a cluster node for a single Redis;
- a primary watched by Sentinels (``HUB_REDIS_SENTINELS``, ``HUB_REDIS_MASTER``): the
  client asks them for the current primary before each new connection and drops a
  connection whose server turned replica (READONLY), so the hub follows a failover.

Keys of one topic share a hash slot (``{topic}`` hash tags, ``hub.backends.redis_history``);
calls are pipelined with ``run_scripts``, which a cluster client splits per node and which
reloads scripts a promoted replica never saw (Redis does not replicate its script cache).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)

from hub.backends.base import BackendUnavailable

#: Connections per replica. A connect storm queues for them instead of failing: redis-py's
#: default pool refuses the 101st concurrent command ("Too many connections").
MAX_CONNECTIONS = 64
#: Connections per cluster node and replica; redis-py's cluster client cannot queue for a
#: free one, so this is a ceiling a connect storm must not reach rather than a pool size.
MAX_CLUSTER_CONNECTIONS = 1024
CLUSTER_SCHEME = "redis+cluster"

#: A client of one Redis, of a Sentinel-managed primary, or of a Redis Cluster.
RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"
#: What a cluster answers while a failover is under way (a slot without a primary yet):
#: "not now", like a connection error, rather than "not this call".
CLUSTER_AWAY: tuple[type[Exception], ...] = (ClusterError, TryAgainError, SlotNotCoveredError)


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (connects to the primary the Sentinels name) with a bounded, waiting
    checkout, like the single-Redis pool."""


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return urlsplit(url).scheme == CLUSTER_SCHEME


def host_ports(text: str, what: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as pairs; ValueError naming ``what`` when one is not."""
    pairs = []
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{what}: expected host:port[,host:port…], got {item.strip()!r}")
        pairs.append((host.strip("[]"), int(port)))
    return pairs


def connect(
    url: str,
    timeout: float,
    tls: Mapping[str, Any] | None = None,
    *,
    sentinels: Sequence[tuple[str, int]] = (),
    master: str | None = None,
) -> RedisClient:
    """A client for ``url`` (see the module docstring for the three forms); ``tls`` holds
    redis-py's ``ssl_*`` options for a ``rediss://`` URL (``hub.tls.redis_ssl_options``).
    With ``sentinels``, ``url`` gives only the credentials and database of the primary
    named ``master``; its host and port are not used.

    ``timeout`` (``settings.backend_timeout``) bounds a connection attempt, each read and
    the wait for a free pooled connection, so a Redis that went silent (not just down)
    cannot hang background work either; request paths also wrap their calls in
    ``deadline``, which bounds the whole call, redis-py's own retries included.
    """
    parts = urlsplit(url)
    if parts.scheme == CLUSTER_SCHEME:
        nodes = [ClusterNode(host, port) for host, port in host_ports(parts.netloc.rpartition("@")[2], "HUB_REDIS_URL")]
        return RedisCluster(
            startup_nodes=nodes,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=MAX_CLUSTER_CONNECTIONS,
            # while a failed primary's replica takes over, the other slots keep working
            require_full_coverage=False,
        )
    if sentinels:
        assert master, "expected the primary's name with sentinels"
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "db": int(parts.path.strip("/") or 0),
            **(tls or {}),
        }
        if parts.scheme == "rediss":
            options["ssl"] = True
        sentinel_options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        manager = Sentinel(list(sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
        client: aioredis.Redis = manager.master_for(
            master,
            connection_pool_class=BlockingSentinelPool,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            **options,
        )
        return client
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **(tls or {}),
    )
    return aioredis.Redis.from_pool(pool)


async def close(client: RedisClient) -> None:
    """Close ``client`` and, for a Sentinel-managed one, its connections to the Sentinels."""
    await client.aclose()
    pool = client.connection_pool if isinstance(client, aioredis.Redis) else None
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


def slot_of(client: RedisClient, key: str) -> int:
    """The hash slot of ``key`` on a cluster client; 0 for any other (one slot for all)."""
    return client.keyslot(key) if isinstance(client, RedisCluster) else 0


ScriptCall = tuple[AsyncScript, Sequence[Any], Sequence[Any]]


async def run_scripts(client: RedisClient, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run each ``(script, keys, args)`` in one pipeline (one round trip per node) and return
    the results in order.

    A node that lacks a script (a replica promoted by a failover: Redis does not replicate
    its script cache) answers NOSCRIPT: the script is loaded (on every primary of a
    cluster) and only those calls run again, so no call is applied twice. Any other
    error is raised, after every call of the pipeline was attempted.
    """
    if not calls:
        return []
    results = await _pipelined(client, calls)
    missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if missing:
        for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
            await client.script_load(script.script)
        for i, result in zip(missing, await _pipelined(client, [calls[i] for i in missing]), strict=True):
            results[i] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


async def _pipelined(client: RedisClient, calls: Sequence[ScriptCall]) -> list[Any]:
    """Each call's answer, or its error (a ResponseError) in its place; a failed connection raises."""
    if len(calls) == 1:  # a plain command: redis-py spends a fifth less on it than on a pipeline of one
        script, keys, args = calls[0]
        try:
            return [await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)]
        except ResponseError as exc:  # in its place, as the pipeline below answers it
            return [exc]
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            # execute_command: redis-py's cluster pipeline refuses its ``evalsha`` method, not
            # the command, which it routes by the keys like any other
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
    return results


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
    except (RedisError, RedisClusterException, OSError) as exc:
        raise BackendUnavailable(f"Redis did not answer ({what}): {exc!r}") from exc
