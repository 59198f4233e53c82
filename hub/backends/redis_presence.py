"""Presence across replicas in Redis (DESIGN.md §6).

Keys (``P`` is ``<prefix>presence:``):

- ``P replicas`` — sorted set: replica id → lease deadline (Redis server time, ms).
  A replica renews its lease every ``ttl / 4`` s for ``3 * ttl / 4`` s, so a replica
  that stops (kill -9 included) stops counting within ``ttl`` of its last heartbeat.
- ``P r:<replica>`` — hash: conn id → user, the replica's connections.
- ``P u:<user>`` — hash: conn id → replica, the user's connections on every replica.

Truth: ``count`` counts only connections whose replica holds a live lease, so it is
right within one TTL even when nobody has reaped a dead replica yet (and even when
no replica runs at all). Events: a user goes online when ``P u:<user>`` goes from
empty to non-empty and offline when it becomes empty again — by ``remove``, by
``close`` or by the reaper. Each of those is one Lua script, so exactly one caller
sees each transition and fires ``on_transition`` for it, across all replicas.

The reaper runs in every live replica after each heartbeat; a dead replica's entries
are removed by one script that also deletes its lease, so only one replica reaps it.
A user who reconnected elsewhere before the reap never goes offline (the user's hash
never became empty). Remaining gaps, stated honestly: a replica that dies between a
script and its ``on_transition`` call loses that one event (at most once there); and
events for one user fired by two replicas at the same moment may reach the exchange
in either order. Keys are built inside the scripts, so this needs a single Redis (or a
primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from hub.backends.base import Connection
from hub.backends.redis_client import unavailable

log = logging.getLogger("hub.presence")

Transition = Callable[[str, bool], Awaitable[None]]

# KEYS: replicas zset, replica hash, user hash. ARGV: replica, conn id, user.
# Returns {live connections of the user, 1 if the user just went online}.
# Shared by both scripts: the user's connections (hash KEYS[3], conn → replica) whose
# replica's lease (score in the zset KEYS[1], ms) has not run out.
_LIVE = """
local function live_connections()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local live = 0
  local conns = redis.call('HGETALL', KEYS[3])
  for i = 2, #conns, 2 do
    local deadline = redis.call('ZSCORE', KEYS[1], conns[i])
    if deadline and tonumber(deadline) >= now then live = live + 1 end
  end
  return live
end
"""

_ADD = (
    _LIVE
    + """
local became = 0
if redis.call('EXISTS', KEYS[3]) == 0 then became = 1 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
return {live_connections(), became}
"""
)

# KEYS: replicas zset, replica hash, user hash. ARGV: conn id.
# Returns {live connections of the user left, 1 if the user just went offline}.
_REMOVE = (
    _LIVE
    + """
local removed = redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local went = 0
if redis.call('EXISTS', KEYS[3]) == 0 then
  if removed == 1 then went = 1 end
  return {0, went}
end
return {live_connections(), went}
"""
)

# KEYS: replicas zset. ARGV: key prefix P, then user ids. Returns live counts, in order.
COUNT_SCRIPT = """
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

# KEYS: replicas zset. ARGV: replica, lease ms. Renews the lease; returns 0 when the
# replica had been reaped (its lease was gone), 1 otherwise.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local had = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if had then return 1 end
return 0
"""

# KEYS: replicas zset. ARGV: key prefix P, then either a replica id to drop
# unconditionally ("self") or nothing (reap the first replica whose lease expired).
# Returns {replica reaped or '', user, user, ...} — the users who went offline.
_REAP = """
local replica = ARGV[2]
if replica == nil then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 1)
  if #dead == 0 then return {''} end
  replica = dead[1]
end
local result = {replica}
local rkey = ARGV[1] .. 'r:' .. replica
local conns = redis.call('HGETALL', rkey)
for i = 1, #conns, 2 do
  local ukey = ARGV[1] .. 'u:' .. conns[i + 1]
  redis.call('HDEL', ukey, conns[i])
  if redis.call('EXISTS', ukey) == 0 then result[#result + 1] = conns[i + 1] end
end
redis.call('DEL', rkey)
redis.call('ZREM', KEYS[1], replica)
return result
"""

# KEYS: replicas zset. ARGV: key prefix P. Returns {replica, count, ...} of live replicas.
_REPLICAS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
local result = {}
for _, r in ipairs(live) do
  result[#result + 1] = r
  result[#result + 1] = redis.call('HLEN', ARGV[1] .. 'r:' .. r)
end
return result
"""

MAX_REAPS_PER_SWEEP = 100


def presence_keys(prefix: str) -> tuple[str, str]:
    """The key prefix ``P`` of presence and its replicas sorted set, for ``prefix``."""
    base = f"{prefix}presence:"
    return base, base + "replicas"


async def count_users(redis: aioredis.Redis, prefix: str, users: Sequence[str]) -> dict[str, int]:
    """Live connections of each user across every replica, read straight from Redis.

    Usable without a running hub (the publish helper, scripts): a connection counts
    only while its replica's lease is live. ``users`` must be valid user ids.
    """
    if not users:
        return {}
    base, replicas = presence_keys(prefix)
    counts = await redis.eval(COUNT_SCRIPT, 1, replicas, base, *users)
    return {user: int(c) for user, c in zip(users, counts, strict=True)}


class RedisPresence:
    """The ``Presence`` seam in Redis, shared by every replica of the deployment.

    The caller must ``await start()`` before ``add`` (it renews this replica's lease)
    and ``await close()`` at shutdown (it stops the heartbeat and removes this
    replica's connections, firing their offline events). ``on_transition(user, online)``
    is awaited once per transition that this replica's calls observed; its failures are
    logged, never raised into the connection that caused them.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        replica: str,
        ttl: int,
        on_transition: Transition | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"expected a positive presence ttl in seconds, got {ttl}")
        self._redis = redis
        self._prefix = prefix
        self._base, self._replicas_key = presence_keys(prefix)
        self.replica = replica
        self.ttl = ttl
        self._lease_ms = int(ttl * 750)
        self._interval = ttl / 4
        self._on_transition = on_transition
        self._local: dict[str, str] = {}  # conn id → user: what to re-register after a reap
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._add = redis.register_script(_ADD)
        self._remove = redis.register_script(_REMOVE)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._reap = redis.register_script(_REAP)
        self._replicas = redis.register_script(_REPLICAS)

    def _rkey(self) -> str:
        return f"{self._base}r:{self.replica}"

    def _ukey(self, user: str) -> str:
        return f"{self._base}u:{user}"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Drop what an earlier process with this replica id left behind, take the lease,
        reap dead replicas, and start the heartbeat task. Raises when Redis is unreachable."""
        if self._task is not None:
            return
        previous = await self._redis.zscore(self._replicas_key, self.replica)
        if previous is not None:
            log.warning("replica id %s was registered already (a restart, or a duplicate id?)", self.replica)
        await self._drop(self.replica)
        await self._heartbeat(keys=[self._replicas_key], args=[self.replica, self._lease_ms])
        await self.sweep()
        self._stopping.clear()
        self._task = asyncio.create_task(self._beat(), name=f"presence-heartbeat-{self.replica}")

    async def close(self) -> None:
        """Stop and await the heartbeat, then remove this replica's entries; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            await task
            await self._drop(self.replica)
            self._local.clear()

    # ------------------------------------------------------------------ the seam

    async def add(self, conn: Connection) -> int:
        """Record ``conn`` (its ``replica`` must be this one's); return the user's live count."""
        self._local[conn.conn_id] = conn.user
        keys = [self._replicas_key, self._rkey(), self._ukey(conn.user)]
        with unavailable("presence add"):
            live, became = await self._add(keys=keys, args=[self.replica, conn.conn_id, conn.user])
        if became:
            await self._fire(conn.user, True)
        return int(live)

    async def remove(self, conn: Connection) -> int:
        """Forget ``conn`` (idempotent); return the user's remaining live count."""
        self._local.pop(conn.conn_id, None)
        keys = [self._replicas_key, self._rkey(), self._ukey(conn.user)]
        with unavailable("presence remove"):
            live, went = await self._remove(keys=keys, args=[conn.conn_id])
        if went:
            await self._fire(conn.user, False)
        return int(live)

    async def count(self, users: Sequence[str]) -> dict[str, int]:
        """Live connections of each user on every replica whose lease is current."""
        with unavailable("presence count"):
            return await count_users(self._redis, self._prefix, users)

    async def replicas(self) -> dict[str, int]:
        """Each live replica's connection count."""
        flat = await self._replicas(keys=[self._replicas_key], args=[self._base])
        return {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    # ------------------------------------------------------------------ background

    async def sweep(self) -> list[str]:
        """Reap replicas whose lease expired (at most ``MAX_REAPS_PER_SWEEP``), firing the
        offline event of every user whose last connection was there; return their ids."""
        reaped: list[str] = []
        for _ in range(MAX_REAPS_PER_SWEEP):
            result = await self._reap(keys=[self._replicas_key], args=[self._base])
            replica = _text(result[0])
            if not replica:
                break
            users = [_text(u) for u in result[1:]]
            log.warning("reaped dead replica %s: %d users went offline", replica, len(users))
            for user in users:
                await self._fire(user, False)
            reaped.extend(users)
        return reaped

    async def _drop(self, replica: str) -> None:
        result = await self._reap(keys=[self._replicas_key], args=[self._base, replica])
        for user in result[1:]:
            await self._fire(_text(user), False)

    async def _beat(self) -> None:
        """Renew the lease every ``ttl / 4`` s and reap; survive Redis outages (logged)."""
        while not self._stopping.is_set():
            try:
                alive = await self._heartbeat(keys=[self._replicas_key], args=[self.replica, self._lease_ms])
                if not alive:
                    await self._reregister()
                await self.sweep()
            except Exception:  # Redis down or slow: keep trying, the lease says the truth
                log.exception("presence heartbeat of %s failed", self.replica)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopping.wait()

    async def _reregister(self) -> None:
        """This replica was reaped while alive (a stall longer than its lease): add back
        every connection it still serves; their users come online again."""
        log.warning("replica %s was reaped while alive; re-registering %d connections", self.replica, len(self._local))
        for conn_id, user in list(self._local.items()):
            await self.add(Connection(conn_id, user, self.replica))

    async def _fire(self, user: str, online: bool) -> None:
        if self._on_transition is None:
            return
        try:
            await self._on_transition(user, online)
        except Exception:
            log.exception("presence event %s %s failed", user, "online" if online else "offline")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
