"""Sharded sequencing: which replica sequences which ingest shard (docs/protocol.md §5).

With ``HUB_INGEST_SHARDS=N`` > 1 each shard queue (``hub.backends.shard_topology``) has one
active sequencer, and the active sequencers are spread over the live replicas:

- Membership: every replica renews a short lease (``HUB_SHARD_LEASE``, 3 s, every third
  of it) in the sorted set ``<prefix>shards:replicas`` (replica → deadline, Redis server
  time); one script renews it, drops expired members and returns the live ones. A
  replica killed with -9 stops counting within the lease; one that shuts down
  leaves at once. (The presence lease is far longer, ``0.75 * HUB_PRESENCE_TTL``: shards
  would stay unsequenced that long.)
- Assignment (``assign``): a balanced rendezvous hash over the live members, computed by
  every replica from the same set after each renewal, so they agree without talking:
  each shard, in order, goes to the replica that ranks it highest among those with room,
  and the room is ⌊N/R⌋ shards each plus one for N mod R of them: 6 shards on 3 replicas
  are 2 each, and a change of members moves few shards.
- Safety: each shard queue keeps single active consumer, so two replicas that disagree for
  a moment (one saw a member change first) never sequence one shard together: the newcomer
  waits as a standby until the previous holder lets go. A holder lets go by
  ``Sequencer.stop``: it finishes what it was delivered, then closes its channel; what it
  had not acked goes back to the queue, first in line for the next consumer, and ids that
  were already appended keep their offset (history de-duplicates by message id).
- While Redis does not answer, a replica keeps the shards it holds (it cannot sequence
  without Redis anyway) and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from hub.backends.redis_client import RedisClient, deadline
from hub.backends.redis_history import RedisHistory
from hub.backends.sequencer import Sequencer, SequencerStats
from hub.backends.shard_topology import shard_binding, shard_queue
from hub.settings import Settings

log = logging.getLogger("hub.shards")

#: KEYS[1] members; ARGV: replica, lease in ms (0: leave). Returns the live members.
MEMBERS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[2])
if lease > 0 then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease * 10)
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def _rank(shard: int, replica: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{shard}/{replica}".encode(), digest_size=8).digest(), "big")


def assign(shards: int, replicas: Sequence[str]) -> dict[int, str]:
    """Shard → replica: balanced rendezvous hashing (see the module docstring).

    Deterministic in the set of ``replicas`` (not their order); every replica gets
    ⌊shards/R⌋ or ⌈shards/R⌉ shards. Empty when there are no replicas.
    """
    members = sorted(set(replicas))
    if not members:
        return {}
    floor, extra = divmod(shards, len(members))
    held = dict.fromkeys(members, 0)
    owners: dict[int, str] = {}
    for shard in range(shards):
        for replica in sorted(members, key=lambda r: _rank(shard, r), reverse=True):
            if held[replica] < floor or (held[replica] == floor and extra > 0):
                if held[replica] == floor:
                    extra -= 1
                held[replica] += 1
                owners[shard] = replica
                break
    return owners


class ShardCoordinator:
    """Starts and stops this replica's shard sequencers as the live members change.

    ``start`` joins (raises when Redis does not answer) and takes this replica's shards in
    the background; ``close`` leaves and hands every shard over (``Sequencer.stop``).
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        history: RedisHistory,
        redis: RedisClient,
        settings: Settings,
    ) -> None:
        self._connection = connection
        self._history = history
        self._settings = settings
        self._key = f"{settings.redis_prefix}shards:replicas"
        self._members = redis.register_script(MEMBERS_SCRIPT)
        self._sequencers: dict[int, Sequencer] = {}
        self._done = SequencerStats()  # counters of the sequencers stopped so far
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.members: list[str] = []
        self.moves = 0

    @property
    def replica(self) -> str:
        return self._settings.replica_id

    @property
    def held(self) -> list[int]:
        """The shards this replica consumes now (it is their active sequencer, or about to be)."""
        return sorted(self._sequencers)

    async def start(self) -> None:
        await self._renew()
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="hub-shards")

    async def close(self) -> None:
        """Stop re-assigning, leave the members (the others take over at their next renewal),
        and hand every shard over."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            await task
        with contextlib.suppress(Exception):  # Redis away: the lease runs out by itself
            async with deadline("shards leave", self._settings.backend_timeout):
                await self._members(keys=[self._key], args=[self.replica, 0])
        await asyncio.gather(*(self._stop(shard) for shard in list(self._sequencers)))

    async def _renew(self) -> list[str]:
        async with deadline("shards lease", self._settings.backend_timeout):
            flat = await self._members(keys=[self._key], args=[self.replica, int(self._settings.shard_lease * 1000)])
        return [m.decode() if isinstance(m, bytes) else str(m) for m in flat]

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                members = await self._renew()
            except Exception as exc:  # Redis away: keep what is held (module docstring)
                log.warning("shard lease of %s not renewed: %r", self.replica, exc)
            else:
                if members != self.members:
                    log.info("shard members: %s", ", ".join(members))
                self.members = members
                try:
                    await self._apply(assign(self._settings.ingest_shards, members))
                except Exception:  # a bug here must not end the re-assignment for good
                    log.exception("shard re-assignment of %s failed; trying again", self.replica)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.shard_lease / 3):
                    await self._stopping.wait()

    async def _apply(self, owners: dict[int, str]) -> None:
        mine = {shard for shard, replica in owners.items() if replica == self.replica}
        losing = set(self._sequencers) - mine
        taking = mine - set(self._sequencers)
        if losing or taking:
            log.info("%s: shards %s given up, %s taken", self.replica, sorted(losing), sorted(taking))
        await asyncio.gather(*(self._stop(shard) for shard in losing), *(self._start(shard) for shard in taking))

    async def _start(self, shard: int) -> None:
        settings = self._settings
        sequencer = Sequencer(
            self._connection,
            self._history,
            settings,
            queue=shard_queue(settings, shard),
            binding=shard_binding(settings),
            owner=True,
        )
        try:
            async with asyncio.timeout(settings.backend_timeout):
                await sequencer.start()
        except Exception as exc:  # the broker away or slow: the next renewal tries again
            log.warning("could not start the sequencer of shard %d: %r", shard, exc)
            await sequencer.stop(0)
            return
        self._sequencers[shard] = sequencer
        self.moves += 1

    async def _stop(self, shard: int) -> None:
        sequencer = self._sequencers.pop(shard)
        timeout = self._settings.backend_timeout
        try:
            async with asyncio.timeout(2 * timeout):
                await sequencer.stop(timeout)
        except TimeoutError:
            log.warning("the sequencer of shard %d did not stop within %g s", shard, 2 * timeout)
        _add(self._done, sequencer.stats)

    def stats(self) -> dict[str, Any]:
        """Summed counters of every shard sequencer this replica ran, and the shards it holds."""
        total = SequencerStats()
        _add(total, self._done)
        for sequencer in self._sequencers.values():
            _add(total, sequencer.stats)
        running = list(self._sequencers.values())
        return {
            "sequenced": total.sequenced,
            "sequencer_batches": total.batches,
            "duplicates": total.duplicates,
            "dead_letters": total.dead_letters,
            "redis_retries": total.redis_retries,
            "ingest_lag_seconds": max((s.stats.last_lag_ms for s in running), default=0) / 1000,
            "sequencer_inflight": sum(s.inflight for s in running),
            "shards": {shard: shard in self._sequencers for shard in range(self._settings.ingest_shards)},
            "shard_sequenced": {shard: s.stats.sequenced for shard, s in self._sequencers.items()},
            "shards_held": len(self._sequencers),
            "shard_members": len(self.members),
        }


def _add(total: SequencerStats, more: SequencerStats) -> None:
    total.sequenced += more.sequenced
    total.duplicates += more.duplicates
    total.batches += more.batches
    total.redis_retries += more.redis_retries
    for reason, count in more.dead_letters.items():
        total.dead_letters[reason] = total.dead_letters.get(reason, 0) + count
