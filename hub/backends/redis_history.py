"""History over Redis streams: one stream per topic, the entry id is the offset (docs/protocol.md §5).

Layout under ``prefix`` (``settings.redis_prefix``):

- ``<prefix>s:{<topic>}``: the topic's stream; fields ``i`` (notification id), ``t`` (ts,
  ms), ``k`` (how ``d`` is encoded: ``j`` JSON, ``m`` msgpack) and ``d`` (the payload,
  as the publisher sent it: it is never re-encoded on the way in);
- ``<prefix>d:{<topic>}:<id>``: the de-duplication key, holding the entry's offset for as
  long as the entry is retained.

The ``{<topic>}`` hash tag puts every key of a topic in the topic's hash slot, so each
script touches one slot and runs on a Redis Cluster as on one Redis (every key about a
topic, read state included, follows this convention). Keys named before the tags
(``<prefix>s:<topic>``) are not read any more: see docs/operations.md §9.

Retention is exact (count and age), like the embedded backend: entries are removed
with ``XDEL`` rather than ``XTRIM`` because Redis 7.0 only advances the stream's
``max-deleted-entry-id`` on ``XDEL``, and that id is what makes the ``complete`` flag
of a read exact (a read after offset ``o`` is complete iff ``o >= max-deleted``). Every
operation is one Lua script call per hash slot: on one Redis (or a Sentinel-managed
primary) an append batch is one atomic call; on a cluster it is one call per slot, all
in one pipeline (atomic per topic, which is what order and de-duplication need).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster

from hub.backends.base import HistoryRead, issued_here
from hub.backends.redis_batch import batch_for
from hub.backends.redis_client import RedisClient, ScriptCall, deadline, run_scripts, slot_of
from hub.notification import Notification, now_ms
from hub.payload import BadPayload, loads_json, loads_msgpack
from hub.protocol import json_dumps
from hub.topics import ZERO_OFFSET, Offset, parse_offset

log = logging.getLogger("hub.history")

JSON_KIND = b"j"
MSGPACK_KIND = b"m"

# Shared by both scripts: remove (with XDEL, so max-deleted-entry-id advances) the
# entries past the count cap and older than the age horizon, and their de-dup keys.
_TRIM = """
local function trim(s, dprefix, maxlen, horizon)
  local n = redis.call('XLEN', s)
  local doomed = {}
  if n > maxlen then
    doomed = redis.call('XRANGE', s, '-', '+', 'COUNT', n - maxlen)
  end
  if horizon > 0 then
    local old = redis.call('XRANGE', s, #doomed > 0 and ('(' .. doomed[#doomed][1]) or '-',
                           '(' .. horizon .. '-0', 'COUNT', 1000)
    for _, e in ipairs(old) do doomed[#doomed + 1] = e end
  end
  for _, e in ipairs(doomed) do
    redis.call('XDEL', s, e[1])
    local f = e[2]
    for j = 1, #f, 2 do
      if f[j] == 'i' then redis.call('DEL', dprefix .. f[j + 1]) end
    end
  end
end
"""

# KEYS: stream and de-dup key per message, interleaved. ARGV: maxlen, horizon (ms, 0: no
# age cap), ttl (ms, 0: none), then id, ts, kind, data, newest per message: newest is the
# offset the writer appended last to that stream ('0-0': unknown). Returns, per message,
# {offset, 1 if it was a duplicate else 0}, then the number of streams found without
# their newest offset (a lost tail, marked as _MARK_LOST does before appending).
_APPEND = (
    _TRIM
    + """
local maxlen, horizon, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local touched = {}
local lost = 0
for m = 1, #KEYS / 2 do
  local s, d = KEYS[2 * m - 1], KEYS[2 * m]
  local a = 3 + 5 * (m - 1)
  if touched[s] == nil and ARGV[a + 5] ~= '0-0' then
    local added = redis.pcall('XADD', s, ARGV[a + 5], 'lost', '1')
    if not (type(added) == 'table' and added.err) then
      redis.call('XDEL', s, ARGV[a + 5])
      lost = lost + 1
    end
  end
  local existing = redis.call('GET', d)
  if existing then
    out[m] = {existing, 1}
  else
    local off = redis.call('XADD', s, '*', 'i', ARGV[a + 1], 't', ARGV[a + 2], 'k', ARGV[a + 3], 'd', ARGV[a + 4])
    if ttl > 0 then redis.call('SET', d, off, 'PX', ttl) else redis.call('SET', d, off) end
    out[m] = {off, 0}
  end
  touched[s] = string.sub(d, 1, #d - #ARGV[a + 1])
end
for s, dprefix in pairs(touched) do
  trim(s, dprefix, maxlen, horizon)
  if ttl > 0 then redis.call('PEXPIRE', s, ttl) end
end
out[#out + 1] = lost
return out
"""
)

# KEYS: stream. ARGV: de-dup prefix, maxlen, horizon, after ('-' or '(' .. offset), offset.
# Returns {exists (0/1), max-deleted-entry-id, entries, last-generated-id, offset is an entry (0/1)}.
_READ = (
    _TRIM
    + """
local s = KEYS[1]
if redis.call('EXISTS', s) == 0 then return {0, '0-0', {}, '0-0', 0} end
trim(s, ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local info = redis.call('XINFO', 'STREAM', s)
local maxdel, last = '0-0', '0-0'
for j = 1, #info, 2 do
  if info[j] == 'max-deleted-entry-id' then maxdel = info[j + 1] end
  if info[j] == 'last-generated-id' then last = info[j + 1] end
end
local is_entry = 0
if ARGV[5] ~= '0-0' and #redis.call('XRANGE', s, ARGV[5], ARGV[5]) > 0 then is_entry = 1 end
return {1, maxdel, redis.call('XRANGE', s, ARGV[4], '+'), last, is_entry}
"""
)

# KEYS: stream. ARGV: an offset this stream issued (the newest its writer remembers), ttl
# (ms, 0: none). A stream that has it, or anything newer, lost nothing: 0. Otherwise its
# tail was lost (a failover promoted a replica that had not received it): the offset is
# added and deleted at once, so last-generated-id and max-deleted-entry-id reach it (new
# offsets stay above the lost ones, and reads after an older offset are incomplete): 1.
_MARK_LOST = """
local added = redis.pcall('XADD', KEYS[1], ARGV[1], 'lost', '1')
if type(added) == 'table' and added.err then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def decode_data(kind: bytes, data: bytes) -> Any:
    """A stored payload as the Python value sessions send as ``data``, read as strictly as a
    publisher's (``hub.payload``): raises BadPayload for anything a socket could not be sent."""
    if kind == MSGPACK_KIND:
        return loads_msgpack(data)
    return loads_json(data)


class RedisHistory:
    """Per-topic history in Redis streams, capped at ``size`` entries and ``ttl`` seconds.

    ``redis`` must be a client created with ``decode_responses=False``. The history does
    not own it: the caller closes it. ``latest`` and ``read`` (a connect's path) take at
    most ``timeout`` seconds (``settings.backend_timeout``), then raise BackendUnavailable.
    Entries a read cannot decode (written by something else, or by an older hub less
    strict) are skipped and counted in ``skipped``, never sent (docs/protocol.md §5).
    Streams found to have lost their newest entries (a failover) are counted in ``lost_tails``.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        size: int,
        ttl: float,
        timeout: float = 3.0,
        writers: Sequence[str] = (),
    ) -> None:
        self._redis = redis
        self._timeout = timeout
        self._prefix = prefix
        self._size = size
        self._ttl_ms = int(ttl * 1000)
        self._append = redis.register_script(_APPEND)
        self._read = redis.register_script(_READ)
        self._mark_lost = redis.register_script(_MARK_LOST)
        self._batch = batch_for(redis, timeout)
        self.skipped = 0
        self.lost_tails = 0
        # The sequencers (by ingest queue) that must have vouched for the current primary
        # before a read is trusted to be complete (``seal``); none on a cluster (see ``seal``).
        self._writers = () if isinstance(redis, RedisCluster) else tuple(writers)
        self._sealed_key = f"{prefix}{{history}}:sealed"
        self.untrusted_reads = 0

    def stream_key(self, topic: str) -> str:
        """The Redis key of ``topic``'s stream."""
        return f"{self._prefix}s:{{{topic}}}"

    def _dedup_prefix(self, topic: str) -> str:
        return f"{self._prefix}d:{{{topic}}}:"

    def _recent(self, offset: str) -> str:
        """``offset`` if its stream cannot have expired since (younger than the TTL, with a
        minute to spare for clocks), else ``0-0``: an idle stream's key expires, which is
        not a loss to look for (a read after an offset that old is incomplete anyway)."""
        if offset == ZERO_OFFSET or self._ttl_ms <= 0:
            return offset
        return offset if parse_offset(offset)[0] > now_ms() - self._ttl_ms + 60_000 else ZERO_OFFSET

    def _horizon(self) -> int:
        return now_ms() - self._ttl_ms if self._ttl_ms > 0 else 0

    async def append_batch(
        self, entries: Sequence[tuple[str, str, int, bytes, bytes]], newest: Mapping[str, str] | None = None
    ) -> list[tuple[str, bool]]:
        """Append ``(topic, id, ts, kind, data)`` entries: one atomic script call per hash
        slot (one for all on a single Redis), pipelined.

        Returns each entry's ``(offset, duplicate)`` in order; entries of one topic get
        increasing offsets in the order given. A duplicate id keeps its first offset.
        Raises redis errors (connection lost, …): then each slot's part was applied in
        full or not at all, and the caller may retry the same batch safely (the ids make
        it idempotent: what was applied comes back as duplicates, with its offsets).

        ``newest`` (topic → the offset this writer appended last) lets each call find a
        lost tail of the streams it appends to (see ``mark_lost_tails``) and mark it before
        appending; ``lost_tails`` counts the streams found so. Offsets too old for their
        stream to be certain to exist are not checked (``_recent``).
        """
        head: list[str | int | bytes] = [self._size, self._horizon(), self._ttl_ms]
        groups: dict[int, tuple[list[int], list[str], list[str | int | bytes]]] = {}
        for n, (topic, id, ts, kind, data) in enumerate(entries):
            stream = self.stream_key(topic)
            positions, keys, args = groups.setdefault(slot_of(self._redis, stream), ([], [], list(head)))
            positions.append(n)
            keys += (stream, self._dedup_prefix(topic) + id)
            args += (id, ts, kind, data, self._recent((newest or {}).get(topic, ZERO_OFFSET)))
        calls: list[ScriptCall] = [(self._append, keys, args) for _, keys, args in groups.values()]
        out: list[tuple[str, bool]] = [("", False)] * len(entries)
        for (positions, _, _), result in zip(groups.values(), await run_scripts(self._redis, calls), strict=True):
            if result[-1]:
                self.lost_tails += int(result[-1])
                log.warning("Redis lost the newest history of %d topics (a failover?): marked", result[-1])
            for n, (offset, dup) in zip(positions, result[:-1], strict=True):
                out[n] = (offset.decode(), bool(dup))
        return out

    async def mark_lost_tails(self, newest: Mapping[str, str]) -> list[str]:
        """Make a lost tail visible: for each ``topic → offset`` this writer appended last,
        a stream that no longer reaches ``offset`` (Redis failed over to a replica that had
        not received it, or restarted without it) gets it as deleted. Returns those topics.

        Afterwards a read after an offset below the lost one is incomplete (``recovered:
        false``, docs/protocol.md §5) and new offsets are issued above it, so neither a
        client that saw part of the lost tail nor one that saw none of it is shown a
        silent gap. Must run before the writer appends again to those topics: a new entry
        above the lost offset would hide the loss.
        """
        topics = [t for t in newest if self._recent(newest[t]) != ZERO_OFFSET]
        calls: list[ScriptCall] = [(self._mark_lost, [self.stream_key(t)], [newest[t], self._ttl_ms]) for t in topics]
        results = await run_scripts(self._redis, calls)
        lost = [topic for topic, marked in zip(topics, results, strict=True) if marked]
        self.lost_tails += len(lost)
        if lost:
            log.warning("Redis lost the newest history of %d topics (a failover?): reported as incomplete", len(lost))
        return lost

    async def primary_id(self) -> str | None:
        """The replication id of the Redis that answers (``master_replid``: a promoted replica
        or a restarted, emptied server has a new one); None on a cluster."""
        if isinstance(self._redis, RedisCluster):
            return None
        info = await self._redis.info("replication")  # raises redis errors, like append_batch
        return str(info.get("master_replid") or "") or None

    async def seal(self, writer: str, primary: str) -> None:
        """Vouch that ``writer`` (a sequencer, by its ingest queue) has marked every lost tail it
        knows of on the Redis whose replication id is ``primary`` (``mark_lost_tails`` first).

        A read is complete only while every writer vouched for the primary that answers it:
        right after a failover, before the sequencers found what the new primary lost, reads
        answer ``recovered: false`` instead of a silent gap (docs/operations.md §12). Not on a
        Redis Cluster, where each primary fails over on its own (a window remains there).
        """
        await self._redis.hset(self._sealed_key, writer, primary)  # raises redis errors

    async def sealed_by(self, writer: str) -> str | None:
        """The primary ``writer`` last vouched for, as recorded in Redis (raises redis errors)."""
        value = await self._redis.hget(self._sealed_key, writer)
        return value.decode() if isinstance(value, bytes) else value

    async def _trusted(self) -> bool:
        """Whether every writer vouched for the primary answering now (see ``seal``)."""
        if not self._writers:
            return True
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.info("replication")
            pipe.hgetall(self._sealed_key)
            info, sealed = await pipe.execute()
        primary = str(info.get("master_replid") or "").encode()
        return bool(primary) and all(sealed.get(writer.encode()) == primary for writer in self._writers)

    async def append(self, topic: str, id: str, ts: int, data: Any) -> tuple[str, bool]:
        encoded = json_dumps(data).encode()
        return (await self.append_batch([(topic, id, ts, JSON_KIND, encoded)]))[0]

    async def latest(self, topics: Sequence[str]) -> dict[str, str]:
        """Each topic's newest offset (``0-0`` for none); the reads of every connect of one loop
        turn go to Redis in one pipeline (``RedisBatch``)."""
        batch = self._batch
        async with deadline("latest offsets", self._timeout):
            reads = [batch.command("XREVRANGE", self.stream_key(topic), "+", "-", "COUNT", 1) for topic in topics]
            results = await asyncio.gather(*reads)
        return {t: (r[0][0].decode() if r else ZERO_OFFSET) for t, r in zip(topics, results, strict=True)}

    async def read(self, after: Mapping[str, str]) -> dict[str, HistoryRead]:
        topics = list(after)
        horizon = self._horizon()
        calls: list[ScriptCall] = []
        for topic in topics:
            start = "-" if after[topic] == ZERO_OFFSET else "(" + after[topic]
            args: list[str | int] = [self._dedup_prefix(topic), self._size, horizon, start, after[topic]]
            calls.append((self._read, [self.stream_key(topic)], args))
        async with deadline("history read", self._timeout):
            results, trusted = await asyncio.gather(run_scripts(self._redis, calls), self._trusted())
        if not trusted:
            self.untrusted_reads += 1
            log.warning("history read on a Redis primary not yet checked for lost history (a failover?): incomplete")
        reads: dict[str, HistoryRead] = {}
        now = now_ms()
        for topic, (exists, max_deleted, entries, last, is_entry) in zip(topics, results, strict=True):
            key = parse_offset(after[topic])
            # An idle stream's key expires and a later publish starts a new one: an offset
            # older than the age horizon may be one of the old stream's (see _complete).
            deleted = max(parse_offset(max_deleted.decode()), Offset(horizon, 0))
            newest = parse_offset(last.decode())
            if not issued_here(key, last=newest, max_deleted=deleted, is_entry=bool(is_entry), now=now):
                reads[topic] = HistoryRead([], complete=False, latest=last.decode())  # another site's offset
                continue
            if not exists:
                reads[topic] = HistoryRead([], complete=key == (0, 0))
                continue
            found = []
            for offset, fields in entries:
                notification = self._notification(topic, offset, fields)
                if notification is not None:
                    found.append(notification)
            complete = trusted and _complete(key, parse_offset(max_deleted.decode()), horizon)
            reads[topic] = HistoryRead(found, complete=complete)
        return reads

    def _notification(self, topic: str, offset: bytes, fields: list[bytes]) -> Notification | None:
        """A stream entry as a notification, or None (counted) when it cannot be read."""
        try:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            return Notification(
                id=_text(values[b"i"]),
                topic=topic,
                offset=offset.decode(),
                ts=int(values[b"t"]),
                data=decode_data(values.get(b"k", JSON_KIND), values[b"d"]),
            )
        except (KeyError, ValueError) as exc:  # BadPayload is a ValueError
            self.skipped += 1
            log.warning("skipping unreadable history entry %r of %s: %s", offset, topic, exc)
            return None


def _complete(after: tuple[int, int], max_deleted: tuple[int, int], horizon: int) -> bool:
    """Whether nothing published after ``after`` is missing from a read of a stream that exists.

    Within one stream's life ``max-deleted-entry-id`` is exact: the read is complete iff
    ``after`` is at or past it. But an idle stream key expires (``PEXPIRE``) and a later
    publish starts a new one that remembers nothing deleted. That can only hide a loss
    when ``after`` is older than the age horizon (whatever followed it expired at least one
    TTL ago); so an ``after`` older than the horizon is complete only when this stream
    itself deleted exactly up to it. ``0-0`` (nothing seen yet) stays complete on a stream
    that never deleted anything: the client connected before the topic had history.
    """
    if after < max_deleted:
        return False
    return after[0] >= horizon or after == max_deleted


def _text(raw: bytes) -> str:
    """A stored id as text; raises BadPayload unless it is UTF-8 a socket can carry."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPayload(f"expected a UTF-8 id, got {exc}") from None
