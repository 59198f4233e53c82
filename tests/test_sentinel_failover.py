"""Redis Sentinel: the hub follows a failover, and history a failover lost is never a silent gap.

A private primary, replica and 3 Sentinels per test (``testkit.redis_sentinel``), RabbitMQ
shared (a private vhost). The loss is made deterministic: the replica replicates through a
proxy, stalled while notifications are published; then the primary is killed (SIGKILL)
and the Sentinels promote the replica, which never got them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from hub.settings import ConfigError, Settings
from hub.startup import describe_services
from testkit.redis_sentinel import RedisSentinelSetup
from tests.distributed_env import environment
from tests.harness import RunningHub, run_hub, wait_for
from tests.steady_load import SteadyLoad, data
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(180)]


@contextlib.asynccontextmanager
async def sentinel_hub(
    proxied: bool = False,
) -> AsyncIterator[tuple[RedisSentinelSetup, RunningHub, TcpProxy | None]]:
    """A hub on a fresh Sentinel set-up; with ``proxied``, the replica replicates through a
    proxy the test can stall (yielded third)."""
    redis = RedisSentinelSetup()
    link = await TcpProxy("127.0.0.1", redis.data[0].port).start() if proxied else None
    via = link.port if link is not None else None
    try:
        await asyncio.to_thread(redis.start, via)
        async with environment() as env, run_hub("distributed", env={**env, **redis.env()}) as hub:
            yield redis, hub, link
    finally:
        await asyncio.to_thread(redis.close)
        if link is not None:
            await link.close()


async def publish(hub: RunningHub, user: str, values: range) -> None:
    for value in values:
        await hub.publish(user, value, id=f"{user}-{value}")


async def test_settings_reach_the_primary_through_the_sentinels() -> None:
    async with sentinel_hub() as (redis, hub, _):
        assert hub.settings.sentinel_addresses == tuple(("127.0.0.1", s.port) for s in redis.sentinels)
        assert f"Redis primary {redis.master_name!r} of the Sentinels" in describe_services(hub.node)
        client = await hub.connect("s1")
        await publish(hub, "s1", range(3))
        assert data(await client.notifications(3)) == [0, 1, 2]
        keys = redis.primary.cli("KEYS", f"{hub.settings.redis_prefix}*").split()
        assert f"{hub.settings.redis_prefix}s:{{user.s1}}" in keys  # the stream, hash-tagged


async def test_history_lost_in_a_failover_is_reported_as_not_recovered() -> None:
    async with sentinel_hub(proxied=True) as (redis, hub, link):
        assert link is not None
        watcher = await hub.connect("lt")
        await publish(hub, "lt", range(3))
        kept = await watcher.notifications(3)
        assert redis.primary.cli("WAIT", "1", "10000").strip() == "1"  # 0..2 are on the replica
        link.stall()  # the replica gets nothing more
        await publish(hub, "lt", range(3, 6))
        lost = await watcher.notifications(3)  # delivered live, never replicated
        assert data(lost) == [3, 4, 5]

        await asyncio.to_thread(redis.crash_primary)
        # The hub recovers by itself: a notification published now is delivered live.
        await publish(hub, "lt", range(6, 7))
        after = await watcher.notifications(1, timeout=60)
        assert data(after) == [6]
        assert after[0]["offset"] > lost[-1]["offset"], "new offsets stay above the lost ones"

        # Since an offset the new primary lost: not recovered (never a silent gap).
        inside = await hub.connect("lt", since={"user.lt": lost[0]["offset"]})
        assert inside.connected["recovered"] is False
        # Since an offset before the lost ones: the entries after it are partly gone.
        before = await hub.connect("lt", since={"user.lt": kept[-1]["offset"]})
        assert before.connected["recovered"] is False
        # Since the newest lost offset: nothing after it is missing, so recovered, with 6.
        newest = await hub.connect("lt", since={"user.lt": lost[-1]["offset"]})
        assert newest.connected["recovered"] is True
        assert data(await newest.notifications(1)) == [6]
        # Since an offset after the failover: exact.
        current = await hub.connect("lt", since={"user.lt": after[0]["offset"]})
        assert current.connected["recovered"] is True
        await current.expect_silence(0.2)


async def test_failover_under_steady_publishing() -> None:
    """Crash the primary while publishing to 5 users: live delivery goes on, and each
    reconnecting client either recovers exactly or is told it did not."""
    users = [f"f{n}" for n in range(5)]
    async with sentinel_hub() as (redis, hub, _):
        load = SteadyLoad(hub, {user: await hub.connect(user) for user in users})
        published = load.published
        load.start_publishing()
        await wait_for(lambda: min(published.values()) >= 10, what="publishing to start")
        load.start_receiving()
        failed_at = dict(published)
        started = time.monotonic()
        await asyncio.to_thread(redis.crash_primary)
        promoted_in = time.monotonic() - started
        await load.delivered_past(failed_at)
        delivered_in = time.monotonic() - started
        await load.stop()

        results = {}
        for user in users:
            recovered = await load.exact_then_resumed(user, failed_at[user] // 2)
            results[user] = (published[user], recovered)
        print(
            f"primary killed: promoted in {promoted_in:.1f} s, every user delivered again {delivered_in:.1f} s "
            f"after the kill; published/recovered {results}; lost tails found {hub.node.backend.history.lost_tails}"
        )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HUB_REDIS_SENTINELS": "127.0.0.1:26379"}, "without HUB_REDIS_MASTER"),
        ({"HUB_REDIS_MASTER": "m"}, "without HUB_REDIS_SENTINELS"),
        ({"HUB_REDIS_SENTINELS": "nonsense", "HUB_REDIS_MASTER": "m"}, "expected host:port"),
        (
            {"HUB_REDIS_SENTINELS": "h:1", "HUB_REDIS_MASTER": "m", "HUB_REDIS_URL": "redis+cluster://h:2"},
            "exclude each other",
        ),
        ({"HUB_REDIS_URL": "rediss+cluster://h:2"}, "not supported yet"),
    ],
)
def test_redis_settings_that_cannot_work_are_refused(env: dict[str, str], message: str) -> None:
    base = {"HUB_AMQP_URL": "amqp://h", "HUB_REDIS_URL": "redis://h/0", "HUB_JWT_SECRET": "s", "HUB_API_KEY": "k"}
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**base, **env})
