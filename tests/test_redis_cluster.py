"""The hub on a Redis Cluster (``redis+cluster://``): history and presence across slots, and a
primary killed under steady publishing.

One private cluster of 3 primaries + 3 replicas per module (``testkit.redis_cluster``);
RabbitMQ shared (a private vhost). Waits are conditions with deadlines, never sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hub.backends.redis_client import RedisClient
from testkit.redis_cluster import RedisClusterSetup
from tests.distributed_env import environment
from tests.harness import Client, RunningHub, run_hub, wait_for

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSetup]:
    setup = RedisClusterSetup().start()
    try:
        yield setup
    finally:
        setup.close()


def data(frames: list[dict[str, Any]]) -> list[Any]:
    return [frame["data"] for frame in frames]


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


async def test_primary_killed_under_steady_publishing(cluster: RedisClusterSetup) -> None:
    """kill -9 the primary holding most of the users' streams: live delivery goes on (after
    the cluster's failover) and a reconnecting client recovers exactly or is told it did not."""
    users = [f"k{n}" for n in range(6)]
    async with environment() as env, run_hub("distributed", env={**env, "HUB_REDIS_URL": cluster.url}) as hub:
        prefix = hub.settings.redis_prefix
        by_primary: dict[int, list[str]] = {}
        for user in users:
            port = cluster.primary_of(slot(hub, f"{prefix}s:{{user.{user}}}")).port
            by_primary.setdefault(port, []).append(user)
        victim = cluster.server(max(by_primary, key=lambda p: len(by_primary[p])))
        presence_primary = cluster.primary_of(slot(hub, f"{prefix}{{presence}}:replicas")).port

        clients: dict[str, Client] = {user: await hub.connect(user) for user in users}
        frames: dict[str, list[dict[str, Any]]] = {user: [] for user in users}
        published = dict.fromkeys(users, 0)
        stop = asyncio.Event()

        async def steady(user: str) -> None:
            while not stop.is_set():
                await hub.publish(user, published[user], id=f"{user}-{published[user]}")
                published[user] += 1

        async def receive(user: str) -> None:
            while len(frames[user]) < published[user] or not stop.is_set():
                frames[user].append(await clients[user].recv(timeout=60))

        publishers = [asyncio.create_task(steady(user)) for user in users]
        receivers = [asyncio.create_task(receive(user)) for user in users]
        await wait_for(lambda: min(published.values()) >= 10, what="publishing to start")
        killed_at = dict(published)
        started = time.monotonic()
        victim.kill()
        await wait_for(
            lambda: all(len(frames[u]) >= killed_at[u] + 10 for u in users),
            timeout=90,
            what="live delivery after the failover",
        )
        recovered_in = time.monotonic() - started
        stop.set()
        await asyncio.gather(*publishers)
        await asyncio.wait_for(asyncio.gather(*receivers), 60)

        results = {}
        for user in users:
            got = data(frames[user])
            assert got == list(range(published[user])), user  # nothing lost, duplicated, reordered live
            middle = len(frames[user]) // 2
            again = await hub.connect(user, since={f"user.{user}": frames[user][middle]["offset"]})
            if again.connected["recovered"]:
                assert data(await again.notifications(len(got) - middle - 1)) == got[middle + 1 :], user
            results[user] = (published[user], again.connected["recovered"])
        stats = hub.node.backend.stats()
        print(
            f"killed {victim.address} (presence on it: {victim.port == presence_primary}), "
            f"users on it {by_primary[victim.port]}; every user delivered again {recovered_in:.1f} s after the kill; "
            f"published/recovered {results}; redis retries {stats.get('redis_retries')}"
        )


def test_the_publish_helper_reads_presence_from_a_cluster(cluster: RedisClusterSetup) -> None:
    """``hubnotify.presence`` (used by ``hub presence`` and ``Publisher.online_many``) takes a
    ``redis+cluster://`` URL: nobody online under a fresh prefix, and no MOVED error."""
    from hubnotify.presence import connections_many

    assert connections_many(["nobody", 7], url=cluster.url, prefix="hubtest:helper:") == {"nobody": 0, "7": 0}
