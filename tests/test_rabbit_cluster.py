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
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hubnotify import Publisher as Helper
from testkit.rabbit_cluster import ClusterNode, RabbitCluster, start_cluster
from testkit.services import REDIS_URL, drop_redis_keys, names
from testkit.tokens import API_KEY, SECRET
from testkit.waiting import wait_for
from tests.harness import run_hub
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
HELPED = 3  # users the helper publishes to


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


class HelperPublisher:
    """Publishes steadily with the Python helper (hubnotify) over ``url`` (a node list):
    its own failover and re-publishing; a publish that still fails is retried with the same id."""

    def __init__(self, url: str, exchange: str, users: list[str]) -> None:
        self.url, self.exchange, self.users = url, exchange, users
        self.sent: dict[str, list[str]] = {u: [] for u in users}
        self.retries = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.sent.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        async with Helper(self.url, exchange=self.exchange, timeout=LIMIT) as helper:
            n = 0
            while not self._stop.is_set():
                user = self.users[n % len(self.users)]
                id = f"h{n}-{uuid.uuid4().hex[:6]}"
                for _attempt in range(20):
                    try:
                        await helper.publish(user, n, message_id=id)
                        break
                    except Exception:  # what the helper could not hide within its timeout
                        self.retries += 1
                        await asyncio.sleep(0.1)  # retry backoff
                else:
                    pytest.fail(f"the helper could not publish {id}")
                self.sent[user].append(id)
                n += 1
                try:
                    async with asyncio.timeout(1 / RATE):
                        await self._stop.wait()
                except TimeoutError:
                    pass


@dataclass
class Sent:
    """What both publishers sent, per user (what ``check_exactly_once`` reads)."""

    sent: dict[str, list[str]]


async def run_kill(rabbits: RabbitCluster, env: dict[str, str], victim: ClusterNode, what: str) -> None:
    """Publish steadily (HTTP through the LB, and the helper on the replicas' node list) to
    clients on 3 replicas, kill -9 ``victim``, check exactly once, in order."""
    async with cluster.Cluster(3, env) as running:
        d = Deployment(running, env)
        users = [f"u{i}" for i in range(USERS)]
        helped = [f"h{i}" for i in range(HELPED)]
        clients = await start_clients(d, users + helped)
        publisher = Publisher(d, users)
        helper = HelperPublisher(env["HUB_AMQP_URL"], env["HUB_EXCHANGE"], helped)
        try:
            publisher.start()
            helper.start()
            await wait_until(lambda: _true(publisher.total >= RATE and helper.total > 0), LIMIT, "publishing")
            before = {u: len(c.connects) for u, c in clients.items()}
            sent_before = publisher.total + helper.total
            connected = rabbits.connections_on(victim)
            rabbits.kill(victim)
            killed = time.monotonic()
            # Recovered: a notification published after the kill reached every client.
            marker = publisher.total + 5

            async def flowing() -> bool:
                return publisher.total >= marker and all(
                    set(clients[u].ids()) >= set(publisher.sent[u][: marker // USERS]) for u in users
                )

            await wait_until(flowing, 3 * LIMIT, "notifications flowing again after the kill")
            recover = time.monotonic() - killed
            await asyncio.sleep(3.0)  # keep publishing after recovery (a duration, not synchronisation)
            await publisher.stop()
            await helper.stop()
            sent = Sent({**publisher.sent, **helper.sent})
            await all_delivered(clients, sent, 3 * LIMIT)
            lost, duplicated = check_exactly_once(clients, sent)
            reconnected = sum(len(c.connects) > before[u] for u, c in clients.items())
            print(
                f"\nkill -9 of {what}: clients {len(clients)}, notifications "
                f"{publisher.total} via /api/publish + {helper.total} via the helper "
                f"({sent_before} before the kill), AMQP connections on the victim {connected}, "
                f"lost {lost}, duplicated {duplicated}, publish retries {publisher.retries} (HTTP) "
                f"{helper.retries} (helper), clients reconnected {reconnected}, time to recover {recover:.2f} s"
            )
            assert (lost, duplicated) == (0, 0)
        finally:
            for c in clients.values():
                await c.stop()
            for p in (publisher, helper):
                if p._task is not None and not p._task.done():
                    await p.stop()


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


async def test_a_classic_ingest_on_a_dead_node_the_helper_publishes_again(
    on_cluster: tuple[RabbitCluster, dict[str, str]],
) -> None:
    """A classic ``hub.ingest`` lives on one node: while it is down, publishes through the
    others are unroutable. The helper (mandatory + confirms) gets them back and publishes
    them again until the node is back: the notification arrives once, not lost."""
    rabbits, env = on_cluster
    home, other = rabbits.nodes[0], rabbits.nodes[1]
    env.update(HUB_INGEST_QUEUE_TYPE="classic", HUB_AMQP_URL=cluster_env(rabbits, other)["HUB_AMQP_URL"])
    async with cluster.Cluster(1, {**env, "HUB_AMQP_URL": cluster_env(rabbits, home)["HUB_AMQP_URL"]}):
        pass  # hub.ingest is declared on ``home``
    assert rabbits.queue_info(env["HUB_INGEST_QUEUE"])["type"] == "classic"
    async with run_hub("distributed", env=env, backend_timeout=2.0) as hub:
        client = await hub.connect("c1")
        rabbits.kill(home)
        async with Helper(other.amqp_url(), exchange=env["HUB_EXCHANGE"], timeout=120) as publisher:
            publishing = asyncio.create_task(publisher.publish("c1", "while the ingest node is down", message_id="m1"))
            confirming = publisher._exchange
            assert confirming is not None
            await wait_for(lambda: confirming.returns >= 2, timeout=LIMIT, what="the publish to come back")
            assert not publishing.done()  # not confirmed-and-dropped: still being published again
            returned = confirming.returns
            await asyncio.to_thread(rabbits.restart, home)
            async with asyncio.timeout(3 * LIMIT):
                assert await publishing == "m1"
        frame = await client.recv(timeout=3 * LIMIT)
        assert (frame["id"], frame["data"]) == ("m1", "while the ingest node is down"), frame
        await client.expect_silence(0.5)  # once: the sequencer de-duplicates by message id
        print(f"\nclassic ingest on a dead node: returned {returned} times, then taken; delivered once")
        await client.close()


async def test_hub_publishes_recover_while_the_ingest_leader_moves(
    on_cluster: tuple[RabbitCluster, dict[str, str]],
) -> None:
    """``/api/publish`` right after the quorum leader's kill: every publish answered 200
    within the deadline (nacks make the hub replace its channel), each delivered once."""
    rabbits, env = on_cluster
    leader, survivor = rabbits.nodes[0], rabbits.nodes[2]
    await declare_ingest_on(rabbits, env, leader)
    env["HUB_AMQP_URL"] = cluster_env(rabbits, survivor)["HUB_AMQP_URL"]
    async with run_hub("distributed", env=env, backend_timeout=10.0) as hub:
        backend: Any = hub.node.backend
        client = await hub.connect("q1")
        rabbits.kill(leader)
        killed = time.monotonic()
        answers = [await hub.publish("q1", n) for n in range(20)]
        took = time.monotonic() - killed
        frames = await client.notifications(20)
        assert [f["data"] for f in frames] == list(range(20))
        assert [f["id"] for f in frames] == [a["id"] for a in answers]
        confirming = backend.broker._confirming
        print(
            f"\n/api/publish across a quorum leader kill: 20 publishes answered 200 in {took:.2f} s, "
            f"nacks {confirming.nacks}, channels replaced {confirming.replaced}, retries {confirming.retries}"
        )
        await client.close()


async def _true(value: bool) -> bool:
    return value
