"""A Redis primary the sequencer has not vouched for is not trusted (docs/operations.md §12).

The sequencer records, per ingest queue, the replication id of the primary it swept for
lost history (``<prefix>{history}:sealed``); a read on a primary nobody vouched for answers
``recovered: false``. The failover itself is tested in tests/test_sentinel_failover.py and
tests/test_redis_failover_replicas.py; here, the record and its repair on one Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis

from hub.backends.redis_history import RedisHistory
from tests.distributed_env import REDIS_URL
from tests.harness import RunningHub, run_hub, wait_for


async def _resume(hub: RunningHub, since: dict[str, str]) -> bool:
    client = await hub.connect("42", since=since)
    try:
        recovered: bool = client.connected["recovered"]
        return recovered
    finally:
        await client.close()


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def test_a_read_is_trusted_only_while_the_sequencer_vouches_for_the_primary() -> None:
    async with run_hub("distributed") as hub:
        client = await hub.connect("42")
        await hub.publish("42", "one")
        [frame] = await client.notifications(1)
        await client.close()
        since = {"user.42": frame["offset"]}
        key = f"{hub.settings.redis_prefix}{{history}}:sealed"
        redis = aioredis.Redis.from_url(REDIS_URL)
        try:
            info = await redis.info("replication")
            assert await redis.hget(key, hub.settings.ingest_queue) == info["master_replid"].encode()
            assert await _resume(hub, since) is True

            # a reader waiting for a writer that never vouched for this primary: incomplete
            reader = RedisHistory(
                redis, prefix=hub.settings.redis_prefix, size=100, ttl=60, writers=[hub.settings.ingest_queue, "ghost"]
            )
            [read] = (await reader.read(since)).values()
            assert read.complete is False
            await redis.hset(key, "ghost", info["master_replid"])
            [read] = (await reader.read(since)).values()
            assert read.complete is True

            # a record of another primary (what a promoted replica holds): the sequencer
            # notices and vouches again (every PRIMARY_WATCH)
            await redis.hset(key, hub.settings.ingest_queue, "a-primary-that-was")
            await wait_for(
                lambda: _is(redis.hget(key, hub.settings.ingest_queue), info["master_replid"].encode()),
                what="the sequencer vouching again",
            )
            assert await _resume(hub, since) is True

            # the record gone (a flushed Redis keeps its replication id): restored the same way
            await redis.delete(key)
            await wait_for(lambda: redis.hget(key, hub.settings.ingest_queue), what="the record restored")
            assert await _resume(hub, since) is True
        finally:
            await redis.aclose()
