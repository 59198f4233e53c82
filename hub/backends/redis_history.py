"""History over Redis streams: one stream per topic, the entry id is the offset (docs/protocol.md §5).

Layout under ``prefix`` (``settings.redis_prefix``):

- ``<prefix>s:<topic>``: the topic's stream; fields ``i`` (notification id), ``t`` (ts,
  ms), ``k`` (how ``d`` is encoded: ``j`` JSON, ``m`` msgpack) and ``d`` (the payload,
  as the publisher sent it: it is never re-encoded on the way in);
- ``<prefix>d:<topic>:<id>``: the de-duplication key, holding the entry's offset for as
  long as the entry is retained.

Retention is exact (count and age), like the embedded backend: entries are removed
with ``XDEL`` rather than ``XTRIM`` because Redis 7.0 only advances the stream's
``max-deleted-entry-id`` on ``XDEL``, and that id is what makes the ``complete`` flag
of a read exact (a read after offset ``o`` is complete iff ``o >= max-deleted``). Every
operation is one Lua script call, so an append batch is atomic and one round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from hub.backends.base import HistoryRead, issued_here
from hub.backends.redis_batch import batch_for
from hub.backends.redis_client import deadline
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
# age cap), ttl (ms, 0: none), then id, ts, kind, data per message. Returns, per message,
# {offset, 1 if it was a duplicate else 0}.
_APPEND = (
    _TRIM
    + """
local maxlen, horizon, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local touched = {}
for m = 1, #KEYS / 2 do
  local s, d = KEYS[2 * m - 1], KEYS[2 * m]
  local a = 3 + 4 * (m - 1)
  local existing = redis.call('GET', d)
  if existing then
    out[m] = {existing, 1}
  else
    local off = redis.call('XADD', s, '*', 'i', ARGV[a + 1], 't', ARGV[a + 2], 'k', ARGV[a + 3], 'd', ARGV[a + 4])
    if ttl > 0 then redis.call('SET', d, off, 'PX', ttl) else redis.call('SET', d, off) end
    out[m] = {off, 0}
    touched[s] = string.sub(d, 1, #d - #ARGV[a + 1])
  end
end
for s, dprefix in pairs(touched) do
  trim(s, dprefix, maxlen, horizon)
  if ttl > 0 then redis.call('PEXPIRE', s, ttl) end
end
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
    """

    def __init__(self, redis: Redis, *, prefix: str, size: int, ttl: float, timeout: float = 3.0) -> None:
        self._redis = redis
        self._timeout = timeout
        self._prefix = prefix
        self._size = size
        self._ttl_ms = int(ttl * 1000)
        self._append = redis.register_script(_APPEND)
        self._read = redis.register_script(_READ)
        self._batch = batch_for(redis, timeout)
        self.skipped = 0

    def stream_key(self, topic: str) -> str:
        """The Redis key of ``topic``'s stream."""
        return f"{self._prefix}s:{topic}"

    def _dedup_prefix(self, topic: str) -> str:
        return f"{self._prefix}d:{topic}:"

    def _horizon(self) -> int:
        return now_ms() - self._ttl_ms if self._ttl_ms > 0 else 0

    async def append_batch(self, entries: Sequence[tuple[str, str, int, bytes, bytes]]) -> list[tuple[str, bool]]:
        """Append ``(topic, id, ts, kind, data)`` entries in one atomic script call.

        Returns each entry's ``(offset, duplicate)`` in order; entries of one topic get
        increasing offsets in the order given. A duplicate id keeps its first offset.
        Raises redis errors (connection lost, …): then nothing or everything was applied,
        and the caller may retry the same batch safely (the ids make it idempotent).
        """
        keys: list[str] = []
        args: list[str | int | bytes] = [self._size, self._horizon(), self._ttl_ms]
        for topic, id, ts, kind, data in entries:
            keys.append(self.stream_key(topic))
            keys.append(self._dedup_prefix(topic) + id)
            args += (id, ts, kind, data)
        result = await self._append(keys=keys, args=args)
        return [(offset.decode(), bool(dup)) for offset, dup in result]

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
        async with deadline("history read", self._timeout), self._redis.pipeline(transaction=False) as pipe:
            for topic in topics:
                start = "-" if after[topic] == ZERO_OFFSET else "(" + after[topic]
                args: list[str | int] = [self._dedup_prefix(topic), self._size, horizon, start, after[topic]]
                await self._read(keys=[self.stream_key(topic)], args=args, client=pipe)
            results = await pipe.execute()
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
            reads[topic] = HistoryRead(found, complete=_complete(key, parse_offset(max_deleted.decode()), horizon))
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
