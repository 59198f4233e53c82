"""Three hub replicas behind HAProxy on a private 3-node RabbitMQ cluster: kill -9 a node.

The cluster (testkit.rabbit_cluster) is started once for the module; each test gets its
own exchanges, queues and Redis keys (testkit.services.names) and a quorum ``hub.ingest``.
Clients connect through the load balancer; a publisher posts to ``/api/publish`` through
it steadily and retries a failed request with the same id (the de-duplication key).
Figures (clients, notifications, lost, duplicated, time to recover) are printed (``-s``);
the deadlines only bound a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from testkit.rabbit_cluster import ClusterNode, RabbitCluster, start_cluster
from testkit.services import REDIS_URL, drop_redis_keys, names
from testkit.tokens import API_KEY, SECRET
from tests.test_cluster import (
    LIMIT,
    RATE,
    Deployment,
    Publisher,
    all_delivered,
    check_exactly_once,
    cluster,
    start_clients,
    wait_until,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(240)]

USERS = 9


@pytest.fixture(scope="module")
def rabbits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    rabbits = start_cluster(Path(tmp_path_factory.mktemp("rabbits")), 3)
    try:
        yield rabbits
    finally:
        rabbits.stop()


def heal(rabbits: RabbitCluster) -> None:
    """Restart every killed node: the next test starts on three nodes again."""
    for node in rabbits.nodes:
        if not node.alive:
            rabbits.restart(node)


def cluster_env(rabbits: RabbitCluster, first: ClusterNode) -> dict[str, str]:
    """A deployment on the cluster whose replicas all connect to ``first`` (listed first)."""
    order = [first, *(n for n in rabbits.nodes if n is not first)]
    return {
        **names(),
        "HUB_AMQP_URL": ",".join(n.amqp_url() for n in order),
        "HUB_REDIS_URL": REDIS_URL,
        "HUB_JWT_SECRET": SECRET,
        "HUB_API_KEY": API_KEY,
        "HUB_INGEST_QUEUE_TYPE": "quorum",
        "HUB_INGEST_MAX_PRIORITY": "0",
        "HUB_DRAIN_SECONDS": "1",
        "HUB_LOG_LEVEL": "warning",
    }


@pytest.fixture
async def on_cluster(rabbits: RabbitCluster) -> AsyncIterator[tuple[RabbitCluster, dict[str, str]]]:
    heal(rabbits)
    env = cluster_env(rabbits, rabbits.nodes[0])
    try:
        yield rabbits, env
    finally:
        await drop_redis_keys(env["HUB_REDIS_PREFIX"])
        heal(rabbits)


async def run_kill(rabbits: RabbitCluster, env: dict[str, str], victim: ClusterNode, what: str) -> None:
    """Publish steadily to clients on 3 replicas, kill -9 ``victim``, check exactly once, in order."""
    async with cluster.Cluster(3, env) as running:
        d = Deployment(running, env)
        users = [f"u{i}" for i in range(USERS)]
        clients = await start_clients(d, users)
        publisher = Publisher(d, users)
        try:
            publisher.start()
            await wait_until(lambda: _true(publisher.total >= RATE), LIMIT, "publishing to start")
            before = {u: len(c.connects) for u, c in clients.items()}
            sent_before = publisher.total
            connected = rabbits.connections_on(victim)
            rabbits.kill(victim)
            killed = time.monotonic()
            # Recovered: a notification published after the kill reached every client.
            marker = publisher.total + 5

            async def flowing() -> bool:
                return publisher.total >= marker and all(
                    set(c.ids()) >= set(publisher.sent[u][: marker // USERS]) for u, c in clients.items()
                )

            await wait_until(flowing, 3 * LIMIT, "notifications flowing again after the kill")
            recover = time.monotonic() - killed
            await asyncio.sleep(1.0)  # keep publishing after recovery (a duration, not synchronisation)
            await publisher.stop()
            await all_delivered(clients, publisher, 3 * LIMIT)
            lost, duplicated = check_exactly_once(clients, publisher)
            reconnected = sum(len(c.connects) > before[u] for u, c in clients.items())
            print(
                f"\nkill -9 of {what}: clients {len(clients)}, notifications {publisher.total} "
                f"({sent_before} before the kill), AMQP connections on the victim {connected}, "
                f"lost {lost}, duplicated {duplicated}, "
                f"publish retries {publisher.retries}, clients reconnected {reconnected}, "
                f"time to recover {recover:.2f} s"
            )
            assert (lost, duplicated) == (0, 0)
        finally:
            for c in clients.values():
                await c.stop()
            if publisher._task is not None and not publisher._task.done():
                await publisher.stop()


async def declare_ingest_on(rabbits: RabbitCluster, env: dict[str, str], node: ClusterNode) -> None:
    """Let one replica connected to ``node`` declare the quorum ingest queue: its leader is ``node``."""
    async with cluster.Cluster(1, {**env, "HUB_AMQP_URL": cluster_env(rabbits, node)["HUB_AMQP_URL"]}):
        pass
    assert rabbits.quorum_leader(env["HUB_INGEST_QUEUE"]) is node


async def test_kill_the_node_the_replicas_use(on_cluster: tuple[RabbitCluster, dict[str, str]]) -> None:
    rabbits, env = on_cluster
    await declare_ingest_on(rabbits, env, rabbits.nodes[0])  # the leader elsewhere: the connection's loss alone
    env["HUB_AMQP_URL"] = cluster_env(rabbits, rabbits.nodes[1])["HUB_AMQP_URL"]
    await run_kill(rabbits, env, rabbits.nodes[1], "the replicas' RabbitMQ node")


async def test_kill_the_ingest_leader(on_cluster: tuple[RabbitCluster, dict[str, str]]) -> None:
    rabbits, env = on_cluster
    leader = rabbits.nodes[0]
    await declare_ingest_on(rabbits, env, leader)
    env["HUB_AMQP_URL"] = cluster_env(rabbits, rabbits.nodes[2])["HUB_AMQP_URL"]  # the leader's loss alone
    await run_kill(rabbits, env, leader, "the ingest quorum queue's leader")
    assert rabbits.quorum_leader(env["HUB_INGEST_QUEUE"]) is not leader


async def _true(value: bool) -> bool:
    return value
