"""Sharded sequencing on a private RabbitMQ node with the consistent-hash plugin.

The shared broker must not get plugins, so this module starts its own node
(``testkit.rabbit_node``); Redis is the shared one, under a private key prefix. Replicas
that are killed run as ``hub serve`` processes. Every count is exact: 0 lost, 0
duplicated, each topic in order. Waits are conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from websockets.asyncio.client import connect

from hub.publisher import Publisher
from testkit.client import Client
from testkit.hubs import run_hub
from testkit.net import free_port
from testkit.rabbit_cluster import RabbitCluster, start_cluster
from testkit.rabbit_node import RabbitNode, start_nodes
from testkit.services import REDIS_URL, drop_redis_keys, names
from testkit.tokens import API_KEY, SECRET, make_token
from testkit.waiting import wait_for
from tests import test_cluster as lb
from tests.test_rabbit_cluster import cluster_env, heal, run_kill

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(240)]

PLUGIN = "rabbitmq_consistent_hash_exchange"
HELD = re.compile(r'^hub_shard_held\{shard="(\d+)"\} 1\.0$', re.MULTILINE)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    (rabbit,) = start_nodes(tmp_path_factory.mktemp("shards"), ["shards"], plugins=[PLUGIN])
    try:
        yield rabbit
    finally:
        rabbit.stop()


@pytest.fixture
async def env(node: RabbitNode) -> AsyncIterator[dict[str, str]]:
    """One deployment on the private node: its own names and Redis prefix."""
    environment = {"HUB_AMQP_URL": node.amqp_url(), "HUB_REDIS_URL": REDIS_URL, **names()}
    try:
        yield environment
    finally:
        await drop_redis_keys(environment["HUB_REDIS_PREFIX"])


async def test_per_topic_order_with_four_shards(env: dict[str, str]) -> None:
    """40 topics, 4 concurrent publishers: every topic's notifications in publish order, on 4 shards."""
    users = [f"o{i}" for i in range(40)]
    publishers, rounds = 4, 15
    async with run_hub("distributed", env={**env, "HUB_INGEST_SHARDS": "4"}, replica_id="solo") as hub:
        backend: Any = hub.node.backend
        await wait_for(lambda: backend.stats()["shards_held"] == 4, timeout=30, what="the replica to hold 4 shards")
        clients = [await hub.connect(user) for user in users]

        async def publish(k: int) -> None:
            async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
                for r in range(rounds):
                    await publisher.publish_many([{"user": u, "data": [k, r], "id": f"{u}-{k}-{r}"} for u in users])

        await asyncio.gather(*(publish(k) for k in range(publishers)))
        for client in clients:
            frames = await client.notifications(publishers * rounds, timeout=60)
            data = [tuple(f["data"]) for f in frames]
            assert sorted(data) == sorted((k, r) for k in range(publishers) for r in range(rounds))
            for k in range(publishers):  # one publisher's notifications to a topic keep their order
                assert [r for kk, r in data if kk == k] == list(range(rounds))
            offsets = [tuple(map(int, f["offset"].split("-"))) for f in frames]
            assert offsets == sorted(offsets)
            await client.close()
        per_shard = backend.stats()["shard_sequenced"]
        print(f"\nnotifications sequenced per shard: {per_shard}")
        assert all(per_shard[shard] > 0 for shard in range(4)), per_shard


async def test_changing_the_shard_count_leaves_no_queue_filling_unread(env: dict[str, str]) -> None:
    """1 → 4 → 2 shards: the queues of the previous count are unbound, so nothing new lands
    where nobody sequences; every notification published after each change is delivered."""
    users = [f"c{i}" for i in range(20)]
    stray: dict[int, list[str]] = {
        1: [],
        4: [env["HUB_INGEST_QUEUE"]],
        2: [f"{env['HUB_INGEST_QUEUE']}.{k}" for k in (2, 3)],
    }
    for step, shards in enumerate((1, 4, 2)):
        async with run_hub("distributed", env={**env, "HUB_INGEST_SHARDS": str(shards)}) as hub:
            clients = [await hub.connect(user) for user in users]
            async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
                await publisher.publish_many([{"user": u, "data": step, "id": f"{u}-{step}"} for u in users])
            for client in clients:
                (frame,) = await client.notifications(1)
                assert frame["data"] == step
                await client.close()
            connection = await aio_pika.connect(env["HUB_AMQP_URL"])
            async with connection:
                channel = await connection.channel()
                for queue in stray[shards]:
                    declared = await channel.declare_queue(queue, passive=True)
                    assert declared.declaration_result.message_count == 0, f"{queue} still bound"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    three = start_cluster(tmp_path_factory.mktemp("shards-cluster"), 3, plugins=[PLUGIN])
    try:
        yield three
    finally:
        three.stop()


async def test_quorum_shards_on_a_three_node_cluster(cluster: RabbitCluster) -> None:
    """The clustered set-up of docker/compose.cluster.yaml: 3 nodes, quorum shard queues, the
    hub and the publisher given every node's URL; every topic in order, exactly once."""
    users = [f"q{i}" for i in range(10)]
    env = {
        "HUB_AMQP_URL": cluster.urls(),
        "HUB_REDIS_URL": REDIS_URL,
        "HUB_INGEST_SHARDS": "3",
        "HUB_INGEST_QUEUE_TYPE": "quorum",
        "HUB_INGEST_MAX_PRIORITY": "0",
        **names(),
    }
    try:
        async with run_hub("distributed", env=env) as hub:
            clients = [await hub.connect(user) for user in users]
            async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
                for r in range(30):
                    await publisher.publish_many([{"user": u, "data": r, "id": f"{u}-{r}"} for u in users])
            for client in clients:
                assert [f["data"] for f in await client.notifications(30, timeout=60)] == list(range(30))
                await client.close()
        for shard in range(3):
            info = cluster.queue_info(f"{env['HUB_INGEST_QUEUE']}.{shard}")
            assert info["type"] == "quorum", info
    finally:
        await drop_redis_keys(env["HUB_REDIS_PREFIX"])


def _serve(env: dict[str, str], port: int, replica: str, logs: Path) -> subprocess.Popen[bytes]:
    environ = {**os.environ, **env, "HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY, "HUB_REPLICA_ID": replica}
    with (logs / f"{replica}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--port", str(port), "--log-level", "info"],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _held(port: int) -> list[int] | None:
    """The shards a replica says it holds (``/metrics``), None when it does not answer."""
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
    except httpx.HTTPError:
        return None
    return sorted(int(shard) for shard in HELD.findall(response.text))


async def _spread(ports: dict[str, int]) -> dict[str, list[int]]:
    found = {name: await _held(port) for name, port in ports.items()}
    return {name: held for name, held in found.items() if held is not None}


async def _settled(ports: dict[str, int], shards: int) -> bool:
    """Every shard held by exactly one of these replicas, evenly (counts differ by at most 1)."""
    spread = await _spread(ports)
    if len(spread) != len(ports):
        return False
    held = [shard for shards_of in spread.values() for shard in shards_of]
    counts = [len(shards_of) for shards_of in spread.values()]
    return sorted(held) == list(range(shards)) and max(counts) - min(counts) <= 1


async def test_spread_a_killed_replica_and_a_joining_one(env: dict[str, str], tmp_path: Path) -> None:
    """3 replicas, 6 shards: 2 each; kill -9 one, its shards move; a fourth joins and takes its
    share. Publishing goes on throughout; every user gets every notification once, in order."""
    shards = 6
    env = {**env, "HUB_INGEST_SHARDS": str(shards)}
    ports = {name: free_port() for name in ("a", "b", "c", "d")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    published = 0
    stop = asyncio.Event()
    try:
        for name in ("a", "b", "c"):
            procs[name] = _serve(env, ports[name], f"shard-{name}", tmp_path)
        three = {name: ports[name] for name in ("a", "b", "c")}
        await wait_for(lambda: _settled(three, shards), timeout=60, what="6 shards spread over 3 replicas")
        before = await _spread(three)
        print(f"\nspread with 3 replicas: {before}")

        users = [f"s{i}" for i in range(12)]
        clients = []
        for i, user in enumerate(users):  # on b and c: a is the one that dies
            port = ports["b" if i % 2 else "c"]
            ws = await connect(f"ws://127.0.0.1:{port}/ws", max_queue=None)
            client = Client(ws, binary=False)
            await client.send({"type": "connect", "token": make_token(user)})
            assert (await client.recv())["type"] == "connected"
            clients.append(client)

        async def publish() -> None:
            nonlocal published
            async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
                while not stop.is_set():
                    await publisher.publish_many(
                        [{"user": u, "data": published, "id": f"{u}-{published}"} for u in users]
                    )
                    published += 1
                    await asyncio.sleep(0.05)  # the load's pace, not synchronisation

        publishing = asyncio.create_task(publish())
        await wait_for(lambda: published >= 20, timeout=30, what="publishing to start")
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(10)
        killed_at, at_kill = time.monotonic(), published
        survivors = {name: ports[name] for name in ("b", "c")}
        await wait_for(lambda: _settled(survivors, shards), timeout=30, what="a's shards to move to b and c")
        moved_after = time.monotonic() - killed_at
        after_kill = await _spread(survivors)
        print(f"spread after kill -9 of a ({before['a']} held): {after_kill}, moved within {moved_after:.1f} s")

        await wait_for(lambda: published >= at_kill + 20, timeout=30, what="publishing to go on")
        procs["d"] = _serve(env, ports["d"], "shard-d", tmp_path)
        joined = {name: ports[name] for name in ("b", "c", "d")}
        await wait_for(lambda: _settled(joined, shards), timeout=60, what="d to take its share")
        after_join = await _spread(joined)
        print(f"spread after d joined: {after_join}")
        at_join = published
        await wait_for(lambda: published >= at_join + 20, timeout=30, what="publishing to go on")
        stop.set()
        await publishing

        for user, client in zip(users, clients, strict=True):
            frames = await client.notifications(published, timeout=60)
            data = [f["data"] for f in frames]
            assert data == list(range(published)), f"{user}: not every notification once and in order"
            await client.expect_silence(0.2)
            await client.close()
        print(f"{len(users)} users x {published} notifications: 0 lost, 0 duplicated, in order")
        assert all(len(held) == 2 for held in after_join.values())
    finally:
        stop.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


async def test_kill_a_sequencing_replica_behind_the_lb(env: dict[str, str]) -> None:
    """3 replicas behind HAProxy, 6 shards (2 each); clients connect and /api/publish posts
    through the LB steadily. kill -9 the replica of the first user: its shards move to the
    survivors, its clients reconnect through the LB and resume; every user gets every
    notification once, in order."""
    shards = 6
    env = {**env, "HUB_INGEST_SHARDS": str(shards), "HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY}
    async with lb.cluster.Cluster(3, env) as running:
        d = lb.Deployment(running, env)
        ports = {member.name: member.port for member in running.members}
        await wait_for(lambda: _settled(ports, shards), timeout=60, what="6 shards spread over 3 replicas")
        before = await _spread(ports)
        users = [f"r{i}" for i in range(9)]
        clients = await lb.start_clients(d, users)
        victim = running.replica(clients[users[0]].replica)
        publisher = lb.Publisher(d, users)
        try:
            publisher.start()
            await wait_for(lambda: publisher.total >= lb.RATE, timeout=lb.LIMIT, what="publishing to start")
            moved = [u for u, c in clients.items() if c.replica == victim.name]
            connects = {u: len(clients[u].connects) for u in moved}
            victim.signal(signal.SIGKILL)
            killed = time.monotonic()
            survivors = {name: port for name, port in ports.items() if name != victim.name}
            await wait_for(lambda: _settled(survivors, shards), timeout=30, what="the victim's shards to move")
            shards_moved = time.monotonic() - killed
            after = await _spread(survivors)
            await wait_for(
                lambda: all(len(clients[u].connects) > connects[u] and clients[u].connected.is_set() for u in moved),
                timeout=lb.LIMIT,
                what="the victim's clients to reconnect through the LB",
            )
            back = max(clients[u].connect_times[-1] for u in moved) - killed
            marker = publisher.total + 2 * len(users)  # published after everyone is back
            await wait_for(lambda: publisher.total >= marker, timeout=lb.LIMIT, what="publishing to go on")
            await publisher.stop()
            await lb.all_delivered(clients, publisher, 3 * lb.LIMIT)
            lost, duplicated = lb.check_exactly_once(clients, publisher)
            print(
                f"\nkill -9 of sequencing replica {victim.name} (held {before[victim.name]}): clients "
                f"{len(clients)} through the LB, moved {len(moved)}, back after {back:.2f} s, shards moved "
                f"within {shards_moved:.1f} s to {after}, notifications {publisher.total}, publish retries "
                f"{publisher.retries}, lost {lost}, duplicated {duplicated}"
            )
            assert (lost, duplicated) == (0, 0)
            assert moved, "the victim served clients when it died"
            assert before[victim.name], "the victim held shards when it died"
        finally:
            for client in clients.values():
                await client.stop()
            if publisher._task is not None and not publisher._task.done():
                await publisher.stop()


async def test_kill_the_node_leading_the_shard_queues(cluster: RabbitCluster) -> None:
    """3 sharded replicas behind the LB on the 3-node cluster, steady publishing (HTTP and the
    helper): kill -9 the node leading every shard's quorum queue; exactly once, in order."""
    heal(cluster)
    leader = cluster.nodes[0]
    env = {**cluster_env(cluster, leader), "HUB_INGEST_SHARDS": "3"}
    try:
        async with run_hub("distributed", env=env):  # declares the shard queues through the leader-to-be
            pass
        queues = [f"{env['HUB_INGEST_QUEUE']}.{shard}" for shard in range(3)]
        assert all(cluster.quorum_leader(queue) is leader for queue in queues)
        env["HUB_AMQP_URL"] = cluster_env(cluster, cluster.nodes[2])["HUB_AMQP_URL"]  # the leader's loss alone
        await run_kill(cluster, env, leader, "the node leading the 3 shard queues")
        assert all(cluster.quorum_leader(queue) is not leader for queue in queues)
    finally:
        await drop_redis_keys(env["HUB_REDIS_PREFIX"])
        heal(cluster)
