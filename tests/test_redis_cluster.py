"""The hub on a Redis Cluster (``redis+cluster://``): history and presence across slots, and a
primary killed under steady publishing.

One private cluster of 3 primaries + 3 replicas per module (``testkit.redis_cluster``);
RabbitMQ shared (a private vhost). Waits are conditions with deadlines, never sleeps.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from hub.backends import redis_client
from hub.backends.redis_client import RedisClient
from hub.backends.redis_history import JSON_KIND, RedisHistory
from testkit.redis_cluster import RedisClusterSetup
from tests.distributed_env import environment
from tests.harness import RunningHub, run_hub, wait_for
from tests.steady_load import SteadyLoad, data

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSetup]:
    setup = RedisClusterSetup().start()
    try:
        yield setup
    finally:
        setup.close()


def slot(hub: RunningHub, key: str) -> int:
    redis: RedisClient = hub.node.backend._redis  # type: ignore[attr-defined]
    return int(redis.keyslot(key))


async def test_history_and_presence_across_slots(cluster: RedisClusterSetup) -> None:
    users = [f"c{n}" for n in range(12)]
    async with environment() as env, run_hub("distributed", env={**env, "HUB_REDIS_URL": cluster.url}) as hub:
        prefix = hub.settings.redis_prefix
        clients = {user: await hub.connect(user) for user in users}
        for user in users:
            for value in range(3):
                await hub.publish(user, value, id=f"{user}-{value}")
        frames = {user: await clients[user].notifications(3) for user in users}
        assert all(data(f) == [0, 1, 2] for f in frames.values())

        # a topic's keys share its slot; the topics spread over every primary
        primaries = set()
        for user in users:
            stream_slot = slot(hub, f"{prefix}s:{{user.{user}}}")
            assert stream_slot == slot(hub, f"{prefix}d:{{user.{user}}}:{user}-0")
            primaries.add(cluster.primary_of(stream_slot).port)
        assert len(primaries) == 3, primaries

        # recovery from history, a read over several slots in one connect
        since = {f"user.{u}": frames[u][0]["offset"] for u in users[:1]}
        again = await hub.connect(users[0], since=since)
        assert again.connected["recovered"] is True
        assert data(await again.notifications(2)) == [1, 2]

        # presence: every user online (2 sockets for the first), then one offline
        response = await hub.api("GET", f"/api/presence/{users[0]}")
        assert response.status_code == 200, response.text
        assert response.json()["connections"] == 2
        await clients[users[1]].close()
        await wait_for(
            lambda: _offline(hub, users[1]),
            what="the closed socket's user to go offline",
        )


async def _offline(hub: RunningHub, user: str) -> bool:
    response = await hub.api("GET", f"/api/presence/{user}")
    return response.status_code == 200 and response.json()["connections"] == 0


@pytest.mark.parametrize("fault", ["cluster-failover", "kill"])
async def test_primary_fails_over_under_steady_publishing(cluster: RedisClusterSetup, fault: str) -> None:
    """The primary holding most of the users' streams is failed over — ``CLUSTER FAILOVER`` on
    its replica (graceful: the replica catches up first) or kill -9 (the replica takes over
    after ``cluster-node-timeout``): live delivery goes on and a reconnecting client recovers
    exactly or is told it did not."""
    users = [f"k{n}-{fault}" for n in range(6)]
    async with environment() as env, run_hub("distributed", env={**env, "HUB_REDIS_URL": cluster.url}) as hub:
        prefix = hub.settings.redis_prefix
        by_primary: dict[int, list[str]] = {}
        for user in users:
            port = cluster.primary_of(slot(hub, f"{prefix}s:{{user.{user}}}")).port
            by_primary.setdefault(port, []).append(user)
        with_replica = [p for p in by_primary if _has_replica(cluster, p)]
        victim = cluster.server(max(with_replica, key=lambda p: len(by_primary[p])))
        presence_primary = cluster.primary_of(slot(hub, f"{prefix}{{presence}}:replicas")).port

        load = SteadyLoad(hub, {user: await hub.connect(user) for user in users})
        frames, published = load.frames, load.published
        load.start_publishing()
        load.start_receiving()
        await wait_for(lambda: min(published.values()) >= 10, what="publishing to start")
        killed_at = dict(published)
        started = time.monotonic()
        if fault == "kill":
            victim.kill()
        else:
            cluster.replica_of(victim).cli("CLUSTER", "FAILOVER")
        await load.delivered_past(killed_at)
        recovered_in = time.monotonic() - started
        await load.stop()

        results = {}
        for user in users:
            recovered = await load.exact_then_resumed(user, len(frames[user]) // 2)
            results[user] = (published[user], recovered)
        await asyncio.to_thread(cluster.wait_healthy)
        stats = hub.node.backend.stats()
        print(
            f"{fault} of {victim.address} (presence on it: {victim.port == presence_primary}), "
            f"users on it {by_primary[victim.port]}; every user delivered again {recovered_in:.1f} s after it; "
            f"published/recovered {results}; redis retries {stats.get('redis_retries')}"
        )


def _has_replica(cluster: RedisClusterSetup, port: int) -> bool:
    try:
        cluster.replica_of(cluster.server(port))
    except RuntimeError:
        return False
    return True


def test_the_publish_helper_reads_presence_from_a_cluster(cluster: RedisClusterSetup) -> None:
    """``hubnotify.presence`` (used by ``hub presence`` and ``Publisher.online_many``) takes a
    ``redis+cluster://`` URL: nobody online under a fresh prefix, and no MOVED error."""
    from hubnotify.presence import connections_many

    assert connections_many(["nobody", 7], url=cluster.url, prefix="hubtest:helper:") == {"nobody": 0, "7": 0}


async def test_a_lost_tail_is_found_and_reported(cluster: RedisClusterSetup) -> None:
    """What a failover leaves (streams without their newest entries), rebuilt by hand: the
    append that finds it and the sweep (``mark_lost_tails``) make reads after an older offset
    incomplete and keep new offsets above the lost ones."""
    redis = redis_client.connect(cluster.url, 5.0)
    history = RedisHistory(redis, prefix=f"hubtest:lost:{uuid.uuid4().hex[:8]}:", size=100, ttl=3600)
    try:
        topics = [f"user.l{n}" for n in range(4)]  # over several slots
        entries = [(t, f"{t}-{i}", 1, JSON_KIND, b"1") for i in range(3) for t in topics]
        offsets = [offset for offset, _ in await history.append_batch(entries)]
        first = {t: offsets[n] for n, t in enumerate(topics)}
        newest = {t: offsets[8 + n] for n, t in enumerate(topics)}
        for topic in topics:  # the failover: each stream keeps only its first entry
            stream = history.stream_key(topic)
            await redis.delete(stream)
            await redis.xadd(stream, {"i": f"{topic}-0", "t": 1, "k": "j", "d": "1"}, id=first[topic])
        before = await history.read(first)
        assert all(before[t].complete for t in topics), "the loss is not visible yet"

        # an append to the first topic finds its loss before appending
        ((appended, _),) = await history.append_batch([(topics[0], "new", 1, JSON_KIND, b"2")], newest)
        assert history.lost_tails == 1
        assert appended > newest[topics[0]]
        # the sweep finds the others
        assert sorted(await history.mark_lost_tails(newest)) == sorted(topics[1:])
        assert await history.mark_lost_tails(newest) == []  # marked once
        # an offset older than the TTL is not looked for: its stream may have expired idle
        assert await history.mark_lost_tails({"user.idle": "1000-0"}) == []
        for topic in topics:
            assert (await history.read({topic: first[topic]}))[topic].complete is False, topic
            assert (await history.read({topic: newest[topic]}))[topic].complete is True, topic
    finally:
        await redis_client.close(redis)


async def test_presence_primary_killed() -> None:
    """kill -9 the primary of the ``{presence}`` slot: connects are refused with 1013 (never
    hang) until its replica takes over, then succeed again; presence counts come back."""
    fresh = await asyncio.to_thread(RedisClusterSetup().start)
    try:
        env_redis = {"HUB_REDIS_URL": fresh.url}
        async with environment() as env, run_hub("distributed", env={**env, **env_redis}) as hub:
            before = await hub.connect("p1")
            victim = fresh.primary_of(slot(hub, f"{hub.settings.redis_prefix}{{presence}}:replicas"))
            started = time.monotonic()
            victim.kill()
            refused = 0

            async def connects() -> bool:
                nonlocal refused
                client = await hub.connect("p2", expect_connected=False)
                frame = await client.recv(30)
                await client.close()
                if frame["type"] == "error":
                    assert frame["code"] == 1013, frame
                    refused += 1
                return bool(frame["type"] == "connected")

            try:
                await wait_for(connects, timeout=90, what="a connect to succeed after the failover")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the cluster now: {fresh.nodes()}") from None
            back_in = time.monotonic() - started
            after = await hub.connect("p2")
            response = await hub.api("GET", "/api/presence/p2")
            assert response.json()["connections"] >= 1
            print(f"presence primary killed: {refused} connects refused with 1013, connects back after {back_in:.1f} s")
            await before.close()
            await after.close()
    finally:
        await asyncio.to_thread(fresh.close)
