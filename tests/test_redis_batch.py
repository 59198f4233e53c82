"""RedisBatch against a real Redis (127.0.0.1:6379, or HUB_TEST_REDIS_URL): the calls of one
loop turn travel in one pipeline, each gets its own answer or error.

Every test uses its own key prefix and deletes its keys afterwards; the Redis is shared.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from hub.backends.redis_batch import MAX_BATCH, RedisBatch, batch_for
from hub.backends.redis_client import run_scripts
from testkit.net import free_port
from tests.services import missing

REDIS_URL = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ECHO = "return {KEYS[1], ARGV[1]}"


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        missing(f"Redis at {REDIS_URL} is not reachable ({exc}); start it or set HUB_TEST_REDIS_URL")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: aioredis.Redis) -> AsyncIterator[str]:
    prefix = f"test-batch:{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis.scan_iter(match=prefix + "*", count=500)]
    if keys:
        await redis.delete(*keys)


async def test_the_calls_of_one_loop_turn_share_one_pipeline_and_keep_their_own_answers(
    redis: aioredis.Redis, prefix: str
) -> None:
    batch = RedisBatch(redis, timeout=5)
    script = redis.register_script(ECHO)
    await script(keys=[prefix + "warm"], args=["x"])  # loaded: the batch goes out in one round trip
    await redis.set(prefix + "k", b"v")
    calls = [batch.script(script, [f"{prefix}{i}"], [i]) for i in range(50)]
    got = await asyncio.gather(*calls, batch.command("GET", prefix + "k"))
    assert got[:50] == [[f"{prefix}{i}".encode(), str(i).encode()] for i in range(50)]
    assert got[50] == b"v"
    assert (batch.pipelines, batch.calls) == (1, 51)


async def test_a_larger_turn_is_split_into_pipelines_of_max_batch(redis: aioredis.Redis, prefix: str) -> None:
    batch = RedisBatch(redis, timeout=5)
    n = MAX_BATCH * 2 + 1
    got = await asyncio.gather(*(batch.command("ECHO", str(i)) for i in range(n)))
    assert got == [str(i).encode() for i in range(n)]
    assert (batch.pipelines, batch.calls) == (3, n)


async def test_a_script_redis_does_not_know_yet_is_loaded_and_answered(redis: aioredis.Redis, prefix: str) -> None:
    batch = RedisBatch(redis, timeout=5)
    script = redis.register_script(f"-- {uuid.uuid4().hex}\n{ECHO}")  # a body no one loaded: NOSCRIPT
    got = await asyncio.gather(batch.script(script, [prefix + "a"], ["1"]), batch.script(script, [prefix + "b"], ["2"]))
    assert got == [[(prefix + "a").encode(), b"1"], [(prefix + "b").encode(), b"2"]]


async def test_one_call_failing_leaves_the_others_of_its_pipeline_answered(redis: aioredis.Redis, prefix: str) -> None:
    batch = RedisBatch(redis, timeout=5)
    await redis.set(prefix + "string", b"x")
    wrong = batch.command("XREVRANGE", prefix + "string", "+", "-", "COUNT", 1)  # WRONGTYPE
    right = batch.command("ECHO", "fine")
    results = await asyncio.gather(wrong, right, return_exceptions=True)
    assert isinstance(results[0], ResponseError)
    assert results[1] == b"fine"
    assert batch.pipelines == 1


async def test_a_call_whose_caller_gave_up_before_the_send_is_left_out(redis: aioredis.Redis, prefix: str) -> None:
    batch = RedisBatch(redis, timeout=5)
    abandoned = asyncio.ensure_future(batch.command("SET", prefix + "abandoned", "1"))
    kept = asyncio.ensure_future(batch.command("SET", prefix + "kept", "1"))
    await asyncio.sleep(0)  # both queued: the batch is sent on the next loop turn
    abandoned.cancel()
    await kept
    assert abandoned.cancelled()
    assert await redis.exists(prefix + "kept") == 1
    assert await redis.exists(prefix + "abandoned") == 0
    assert batch.calls == 1


async def test_a_redis_that_is_not_there_fails_every_call_of_the_batch() -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        batch = RedisBatch(client, timeout=2)
        results = await asyncio.gather(batch.command("ECHO", "a"), batch.command("ECHO", "b"), return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await client.aclose()


async def test_presence_and_history_of_one_client_share_one_batch(redis: aioredis.Redis) -> None:
    assert batch_for(redis, 1.0) is batch_for(redis, 1.0)
    other = aioredis.Redis.from_url(REDIS_URL)
    try:
        assert batch_for(other, 1.0) is not batch_for(redis, 1.0)
    finally:
        await other.aclose()


# run_scripts (hub.backends.redis_client): one call goes as a plain command, several as a
# pipeline; both load a script Redis lacks and run only those calls again, and raise a
# script's error once every call was attempted.

WRITE_ONCE = "return redis.call('INCR', KEYS[1])"
FAIL = "return redis.error_reply('BADTHING ' .. ARGV[1])"


@pytest.mark.parametrize("calls", [1, 3])
async def test_run_scripts_loads_an_unknown_script_and_runs_each_call_once(
    redis: aioredis.Redis, prefix: str, calls: int
) -> None:
    script = redis.register_script(f"-- {uuid.uuid4().hex}\n{WRITE_ONCE}")  # a body no one loaded: NOSCRIPT
    got = await run_scripts(redis, [(script, [f"{prefix}{i}"], []) for i in range(calls)])
    assert got == [1] * calls  # each key incremented once: nothing ran twice
    assert [int(await redis.get(f"{prefix}{i}")) for i in range(calls)] == [1] * calls


@pytest.mark.parametrize("calls", [1, 3])
async def test_run_scripts_raises_a_scripts_error_after_attempting_every_call(
    redis: aioredis.Redis, prefix: str, calls: int
) -> None:
    fail = redis.register_script(FAIL)
    write = redis.register_script(WRITE_ONCE)
    batch = [(fail, [prefix + "x"], ["first"])] + [(write, [f"{prefix}{i}"], []) for i in range(calls - 1)]
    with pytest.raises(ResponseError, match="BADTHING first"):
        await run_scripts(redis, batch)
    assert [int(await redis.get(f"{prefix}{i}")) for i in range(calls - 1)] == [1] * (calls - 1)
