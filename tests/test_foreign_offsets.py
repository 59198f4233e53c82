"""A ``since`` offset this site never issued is told apart, on both history backends.

With several sites each sequences for itself (docs/operations.md §7), so a user moving
from site A to site B arrives with A's offsets. B's history says so (``HistoryRead.latest``)
instead of reading after them: whatever it replayed would be a guess, and an offset
ahead of B's would mute the socket if it were used to filter.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from hub.backends.base import History, issued_here
from hub.backends.memory import MemoryHistory
from hub.backends.redis_history import RedisHistory
from hub.notification import now_ms
from hub.topics import format_offset, parse_offset
from tests.distributed_env import REDIS_URL, drop_redis_keys

TOPIC = "user.traveller"


@pytest.fixture(params=["memory", "redis"])
async def history(request: pytest.FixtureRequest) -> AsyncIterator[History]:
    if request.param == "memory":
        yield MemoryHistory(size=3, ttl=3600)
        return
    prefix = f"hubtest:foreign:{uuid.uuid4().hex[:8]}:"
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield RedisHistory(client, prefix=prefix, size=3, ttl=3600)
    finally:
        await client.aclose()
        await drop_redis_keys(prefix)


async def append_apart(history: History, count: int) -> list[str]:
    """``count`` appends, each in a later millisecond than the one before (so that offsets
    between two consecutive entries exist that neither is)."""
    offsets = []
    for i in range(count):
        offsets.append((await history.append(TOPIC, f"n{i}", now_ms(), {"n": i}))[0])
        await asyncio.sleep(0.003)  # not synchronisation: offsets are milliseconds, the clock must move on
    return offsets


async def test_offsets_of_another_site_are_recognised(history: History) -> None:
    offsets = await append_apart(history, 5)
    retained = offsets[2:]  # size 3: the first two were trimmed
    newest = offsets[-1]

    # this site's own offsets: read as always
    read = (await history.read({TOPIC: retained[0]}))[TOPIC]
    assert (read.latest, read.complete) == (None, True)
    assert [n.offset for n in read.notifications] == retained[1:]
    # older than what is retained (possibly this site's, trimmed): the usual incomplete read
    read = (await history.read({TOPIC: offsets[0]}))[TOPIC]
    assert (read.latest, read.complete) == (None, False)
    assert [n.offset for n in read.notifications] == retained
    # ahead of this site's newest offset (another site's clock or sequence ran ahead)
    ahead = format_offset(parse_offset(newest)[0] + 60_000, 0)
    read = (await history.read({TOPIC: ahead}))[TOPIC]
    assert (read.latest, read.complete, list(read.notifications)) == (newest, False, [])
    # within this site's range, but never one of its entries
    ms, seq = parse_offset(retained[0])
    inside = format_offset(ms, seq + 1)  # the next entry is in a later millisecond
    assert parse_offset(retained[0]) < parse_offset(inside) < parse_offset(retained[1])
    read = (await history.read({TOPIC: inside}))[TOPIC]
    assert (read.latest, read.complete, list(read.notifications)) == (newest, False, [])
    # nothing seen yet is always fine
    read = (await history.read({TOPIC: "0-0"}))[TOPIC]
    assert read.latest is None


async def test_an_offset_from_the_future_on_a_topic_without_history(history: History) -> None:
    future = format_offset(now_ms() + 3_600_000, 0)
    read = (await history.read({"user.nobody": future}))["user.nobody"]
    assert (read.latest, read.complete) == ("0-0", False)
    past = format_offset(now_ms() - 3_600_000, 0)  # maybe this site's, expired since
    read = (await history.read({"user.nobody": past}))["user.nobody"]
    assert (read.latest, read.complete) == (None, False)


def test_issued_here() -> None:
    last, deleted = (1000, 5), (900, 0)
    assert issued_here((0, 0), last=last, max_deleted=deleted, is_entry=False, now=2000)
    assert issued_here((800, 0), last=last, max_deleted=deleted, is_entry=False, now=2000)  # trimmed
    assert issued_here((950, 1), last=last, max_deleted=deleted, is_entry=True, now=2000)
    assert not issued_here((950, 1), last=last, max_deleted=deleted, is_entry=False, now=2000)
    assert not issued_here((1000, 6), last=last, max_deleted=deleted, is_entry=False, now=2000)
    assert issued_here((1500, 0), last=(0, 0), max_deleted=(0, 0), is_entry=False, now=2000)
    assert not issued_here((2500, 0), last=(0, 0), max_deleted=(0, 0), is_entry=False, now=2000)
