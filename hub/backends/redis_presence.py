"""Presence across replicas in Redis (docs/protocol.md §6).

Keys (``P`` is ``<prefix>{presence}:``; the hash tag puts them all in one slot):

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
in either order.

Redis Cluster: the scripts name users' and replicas' keys from ``P`` (a reap walks a
replica's users), so every presence key carries the ``{presence}`` hash tag and lives in
one slot, on one primary of the cluster. The cost, chosen over splitting the scripts
(an add or a reap would lose its atomicity, and with it "exactly one caller sees each
transition"): presence does not spread over the cluster's shards. Every connect and
close is a script on that one primary (~2 small hash writes), and it holds two hash
fields per connected socket (docs/operations.md §12).

Outages: every call on a connect's path (``add``, ``remove``, ``count``) takes at most
``timeout`` seconds and then raises BackendUnavailable — except ``remove``, which never
raises. A socket closed while Redis was away must not stay counted (its user would show
online and, at the per-user cap, be refused with 4008), and an ``add`` that timed out may
still land later (Redis stalled, not down). So after any failure the heartbeat
reconciles, on its next ``RECONCILE_PASSES`` successful beats: every entry of this
replica's hash that no open connection of this replica holds is removed (firing its
offline event). Until then, removals do not even try Redis: a close is not slowed by a
Redis known to be away, and the reconciliation removes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from hub.backends.base import BackendUnavailable, Connection
from hub.backends.presence_scripts import (
    ADD_SCRIPT,
    HEARTBEAT_SCRIPT,
    REAP_SCRIPT,
    REMOVE_SCRIPT,
    REPLICAS_SCRIPT,
)

# Re-exported: the presence client and scripts read presence without a running hub.
from hub.backends.presence_scripts import COUNT_SCRIPT as COUNT_SCRIPT
from hub.backends.presence_scripts import count_users as count_users
from hub.backends.presence_scripts import presence_keys as presence_keys
from hub.backends.redis_batch import batch_for
from hub.backends.redis_client import RedisClient, deadline

log = logging.getLogger("hub.presence")

Transition = Callable[[str, bool], Awaitable[None]]

MAX_REAPS_PER_SWEEP = 100
#: Heartbeats that reconcile this replica's entries after a failed call (see the module
#: docstring): more than one, so an ``add`` that lands late after the first is still caught.
RECONCILE_PASSES = 2


class RedisPresence:
    """The ``Presence`` seam in Redis, shared by every replica of the deployment.

    The caller must ``await start()`` before ``add`` (it renews this replica's lease)
    and ``await close()`` at shutdown (it stops the heartbeat and removes this
    replica's connections, firing their offline events). ``on_transition(user, online)``
    is awaited once per transition that this replica's calls observed; its failures are
    logged, never raised into the connection that caused them. ``timeout`` bounds each
    call of the seam (``settings.backend_timeout``).
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        replica: str,
        ttl: int,
        on_transition: Transition | None = None,
        timeout: float = 3.0,
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
        self._timeout = timeout
        self._local: dict[str, str] = {}  # conn id → user: what to re-register after a reap
        self._reconcile = 0  # heartbeats that still have to reconcile (a call failed)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._add = redis.register_script(ADD_SCRIPT)
        self._remove = redis.register_script(REMOVE_SCRIPT)
        self._heartbeat = redis.register_script(HEARTBEAT_SCRIPT)
        self._reap = redis.register_script(REAP_SCRIPT)
        self._replicas = redis.register_script(REPLICAS_SCRIPT)
        self._batch = batch_for(redis, timeout)  # a storm's adds and removes share pipelines

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
            await task  # ends within one heartbeat's deadline
            self._local.clear()
            try:
                async with deadline("presence leave", 2 * self._timeout):
                    await self._drop(self.replica)
            except BackendUnavailable as exc:  # the lease runs out by itself, then the replica is reaped
                log.warning("presence of %s not removed at close: %s", self.replica, exc)

    # ------------------------------------------------------------------ the seam

    async def add(self, conn: Connection) -> int:
        """Record ``conn`` (its ``replica`` must be this one's); return the user's live count."""
        self._local[conn.conn_id] = conn.user
        keys = [self._replicas_key, self._rkey(), self._ukey(conn.user)]
        async with self._call("presence add"):
            live, became = await self._batch.script(self._add, keys, [self.replica, conn.conn_id, conn.user])
        if became:
            await self._fire(conn.user, True)
        return int(live)

    async def remove(self, conn: Connection) -> int | None:
        """Forget ``conn`` (idempotent); return the user's remaining live count.

        Never raises BackendUnavailable: when Redis cannot take the removal now, or failed
        lately, the heartbeat's reconciliation removes the entry once Redis answers, and
        the count is None.
        """
        self._local.pop(conn.conn_id, None)
        if self._reconcile:
            self._reconcile = RECONCILE_PASSES  # a pass already under way may have scanned it
            return None
        try:
            return await self._remove_now(conn.conn_id, conn.user)
        except BackendUnavailable as exc:
            log.warning("presence of %s left to the heartbeat's reconciliation: %s", conn.conn_id, exc)
            return None

    async def count(self, users: Sequence[str]) -> dict[str, int]:
        """Live connections of each user on every replica whose lease is current."""
        async with self._call("presence count"):
            return await count_users(self._redis, self._prefix, users)

    @property
    def reconciling(self) -> bool:
        """A call failed lately: the next heartbeats reconcile this replica's entries."""
        return self._reconcile > 0

    @contextlib.asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[None]:
        """``deadline``, and a failure schedules the reconciliation (see the module docstring)."""
        try:
            async with deadline(what, self._timeout):
                yield
        except BackendUnavailable:
            self._reconcile = RECONCILE_PASSES
            raise

    async def _remove_now(self, conn_id: str, user: str) -> int:
        keys = [self._replicas_key, self._rkey(), self._ukey(user)]
        async with self._call("presence remove"):
            live, went = await self._batch.script(self._remove, keys, [conn_id])
        if went:
            await self._fire(user, False)
        return int(live)

    async def reconcile(self) -> int:
        """Remove every entry of this replica that none of its open connections holds (closed
        while Redis was away, or added late after a timeout); return how many.

        Safe against concurrent calls: an ``add`` records its connection locally before it
        reaches Redis, and a removal is idempotent (its offline event fires once).
        """
        phantoms: dict[str, str] = {}
        async for conn_id, user in self._redis.hscan_iter(self._rkey(), count=1000):
            if _text(conn_id) not in self._local:
                phantoms[_text(conn_id)] = _text(user)
        for conn_id, user in phantoms.items():
            await self._remove_now(conn_id, user)
        if phantoms:
            log.warning("presence of %d connections closed while Redis was away removed", len(phantoms))
        return len(phantoms)

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
        """Renew the lease every ``ttl / 4`` s and reap; survive Redis outages (logged). Each
        heartbeat has a deadline, so a stalled Redis can neither stop the beat nor hold ``close``."""
        limit = max(self._interval, 2 * self._timeout)
        while not self._stopping.is_set():
            try:
                async with deadline("presence heartbeat", limit):
                    alive = await self._heartbeat(keys=[self._replicas_key], args=[self.replica, self._lease_ms])
                    if not alive:
                        await self._reregister()
                    if self._reconcile:
                        await self.reconcile()
                        self._reconcile -= 1
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
        except BackendUnavailable as exc:  # the broker is away: the event is lost (at most once)
            log.warning("presence event %s %s not sent: %s", user, "online" if online else "offline", exc)
        except Exception:
            log.exception("presence event %s %s failed", user, "online" if online else "offline")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
