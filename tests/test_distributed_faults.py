"""Faults on the distributed backend, with exact counts: 0 lost, 0 duplicated, in order per topic.

Faults are injected through TCP proxies the test controls (RabbitMQ, Redis) or by
killing a real ``hub serve`` process; waits are conditions with deadlines, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest
from websockets.asyncio.client import connect

from hub.backends.base import SubscriptionOverflow
from hub.backends.distributed import DistributedBackend
from hub.backends.rabbitmq import CHANNEL_POOL
from hub.publisher import Publisher
from hub.settings import Settings
from tests.distributed_env import environment
from tests.harness import API_KEY, SECRET, Client, free_port, make_token, run_hub, wait_for
from tests.tcp_proxy import proxied, via

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


async def publish_range(env: dict[str, str], user: str, start: int, stop: int, chunk: int = 25) -> None:
    """Publish data ``start..stop-1`` with ids ``m-<i>`` (confirmed), in chunks."""
    async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
        for first in range(start, stop, chunk):
            items = [{"user": user, "data": i, "id": f"m-{i}"} for i in range(first, min(stop, first + chunk))]
            await publisher.publish_many(items)


@contextlib.asynccontextmanager
async def started_backend() -> AsyncIterator[tuple[dict[str, str], Settings, DistributedBackend]]:
    """A started distributed backend with history off, on a fresh vhost; closed afterwards."""
    async with environment(history=False) as env:
        settings = Settings.from_env({**env, "HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY})
        backend = DistributedBackend(settings)
        await backend.start()
        try:
            yield env, settings, backend
        finally:
            await backend.close()


def assert_exact(frames: list[dict[str, Any]], expected: range) -> None:
    data = [f["data"] for f in frames]
    assert len(data) == len(set(data)), f"duplicates: {len(data) - len(set(data))}"
    assert sorted(data) == list(expected), f"lost: {sorted(set(expected) - set(data))[:10]}"
    assert data == list(expected), "out of order"
    offsets = [tuple(map(int, f["offset"].split("-"))) for f in frames]
    assert offsets == sorted(offsets)


async def test_client_reconnects_with_since() -> None:
    async with environment() as env, run_hub("distributed", env=env) as hub:
        client = await hub.connect("r1")
        publishing = asyncio.create_task(publish_range(env, "r1", 0, 300))
        frames = await client.notifications(100)
        await client.close()
        again = await hub.connect("r1", since={"user.r1": frames[-1]["offset"]})
        assert again.connected["recovered"] is True
        await publishing
        print("PUBLISHED", flush=True)
        frames += await again.notifications(200)
        assert_exact(frames, range(300))
        await again.expect_silence(0.2)
        await again.close()


async def test_amqp_connection_cut_and_restored() -> None:
    async with (
        environment() as env,
        proxied(env["HUB_AMQP_URL"]) as proxy,
        run_hub("distributed", env={**env, "HUB_AMQP_URL": via(env["HUB_AMQP_URL"], proxy.port)}) as hub,
    ):
        backend: Any = hub.node.backend
        client = await hub.connect("c1")
        await publish_range(env, "c1", 0, 100)
        frames = await client.notifications(100)
        assert (await hub.http.get("/readyz")).status_code == 200
        accepted = proxy.accepted
        proxy.cut()
        print("CUT", flush=True)
        await wait_for(
            lambda: not backend.connection.connected.is_set(), what="the hub to see its AMQP connection drop"
        )
        readyz = await hub.http.get("/readyz")
        assert readyz.status_code == 503, readyz.text
        assert readyz.json()["checks"]["rabbitmq"] is not None
        assert readyz.json()["checks"]["redis"] is None
        publishing = asyncio.create_task(publish_range(env, "c1", 100, 200))  # while the hub is cut off
        proxy.restore()
        print("RESTORE", flush=True)
        await wait_for(lambda: proxy.accepted > accepted, what="the hub to reconnect")
        await publishing
        print("PUBLISHED", flush=True)
        await publish_range(env, "c1", 200, 300)
        frames += await client.notifications(200, timeout=30)
        assert_exact(frames, range(300))
        await client.expect_silence(0.3)
        # aio-pika#231: after the reconnect, every queue has its consumer again.
        assert backend.broker.restores >= 1
        assert backend.broker.restore_failures == 0
        assert (await hub.node.ready())["rabbitmq"] is None
        assert (await hub.http.get("/readyz")).status_code == 200
        await client.close()


async def test_redis_unavailable_for_a_while() -> None:
    async with environment() as env, proxied(env["HUB_REDIS_URL"], 6379) as proxy:
        redis_url = via(env["HUB_REDIS_URL"], proxy.port)
        async with run_hub("distributed", env={**env, "HUB_REDIS_URL": redis_url}) as hub:
            backend: Any = hub.node.backend
            client = await hub.connect("d1")
            await publish_range(env, "d1", 0, 50)
            frames = await client.notifications(50)
            proxy.cut()
            print("CUT", flush=True)
            await publish_range(env, "d1", 50, 150)  # accepted by RabbitMQ while Redis is away
            await wait_for(lambda: backend.sequencer.stats.redis_retries > 0, what="the sequencer to retry Redis")
            assert (await hub.node.ready())["redis"] is not None
            assert backend.sequencer.stats.sequenced == 50  # nothing acked, nothing dropped meanwhile
            newcomer = await hub.connect("d2", expect_connected=False)  # presence needs Redis
            closed = await newcomer.closed()
            assert closed.code == 1013, closed  # try again later, not an internal error
            assert (await hub.api("GET", "/api/presence/d1")).status_code == 503
            proxy.restore()
            print("RESTORE", flush=True)
            frames += await client.notifications(100, timeout=30)
            assert_exact(frames, range(150))
            await client.expect_silence(0.3)
            assert (await hub.api("GET", "/api/presence/d1")).json()["connections"] == 1
            await client.close()


async def test_slow_socket_is_bounded_and_others_are_not_slowed() -> None:
    """A socket that stops reading is closed with 1013 once ``socket_queue_size`` notifications
    wait for it (its queue is consumed without acks: the bound is the hub's, not a prefetch),
    while another socket of the same user, on the same pooled channels, keeps up."""
    async with environment() as env, run_hub("distributed", env=env, socket_queue_size=20) as hub:
        fast = await hub.connect("s1")
        # max_queue=1: the client stops reading TCP when one frame waits unread.
        slow_ws = await connect(hub.ws_url, subprotocols=["hub.v1.json"], max_queue=1)  # type: ignore[list-item]
        slow = Client(slow_ws, binary=False)
        await slow.send({"type": "connect", "token": hub.token("s1")})

        overflows = "hub_socket_overflows_total"
        big = "x" * 100_000
        frames: list[dict[str, Any]] = []
        async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
            # Paced by the fast socket (10 at a time): it must keep up while the slow one falls behind.
            for step in range(30):
                await publisher.publish_many(
                    [{"user": "s1", "data": {"i": i, "pad": big}} for i in range(step * 10, step * 10 + 10)]
                )
                frames += await fast.notifications(10, timeout=10)
                if await hub.metric(overflows):
                    break
        assert [f["data"]["i"] for f in frames] == list(range(len(frames)))
        await wait_for(lambda: hub.metric(overflows), what="the slow socket to fall behind its bound")
        closed = await slow.closed(timeout=30)
        assert closed.code == 1013
        assert await hub.metric(overflows) == 1  # the fast socket was never taken for a slow one
        await fast.close()


async def test_what_a_socket_queue_drops_overflows_its_socket() -> None:
    """RabbitMQ's own bound on a socket queue (``x-max-length``, drop-head) still ends that
    socket, and only that one: what the queue drops is dead-lettered, with an ``x-death``
    naming the queue, to the replica's overflow queue, whose consumer overflows the
    subscription. Consumed without acks, a socket queue fills only while the replica does
    not read its connection, so the dead-letter RabbitMQ would write is published here."""
    async with started_backend() as (env, settings, backend):
        broker = backend.broker
        dropping = await broker.subscribe(["user.dl1"])
        other = await broker.subscribe(["user.dl2"])

        def death(queue: str, topic: str) -> dict[str, Any]:
            """The ``x-death`` RabbitMQ writes on what ``queue`` dropped (routed by ``topic``)."""
            return {
                "queue": queue,
                "reason": "maxlen",
                "count": 1,
                "exchange": settings.exchange,
                "routing-keys": [topic],
            }

        async with await aio_pika.connect(env["HUB_AMQP_URL"]) as connection:
            channel = await connection.channel()
            # first, what another socket's topic routed to ``other``'s queue (one that socket left
            # as a spare, hub.backends.spare_queues): not ``other``'s overflow
            for queue, topic in ((other.queue, "user.dl1"), (dropping.queue, "user.dl1")):
                message = aio_pika.Message(b"dropped", headers={"x-death": [death(queue, topic)]})
                await channel.default_exchange.publish(message, routing_key=broker.overflow_queue)
        with pytest.raises(SubscriptionOverflow):
            async with asyncio.timeout(10):
                await dropping.receive()
        assert broker.overflows == 1
        await broker.publish("user.dl2", "still served")
        async with asyncio.timeout(10):
            assert [n.data for n in await other.receive()] == ["still served"]
        await dropping.close()
        await other.close()


async def test_one_user_on_two_replicas() -> None:
    async with environment() as env, run_hub("distributed", env=env) as a, run_hub("distributed", env=env) as b:
        on_a = await a.connect("t1")
        on_b = await b.connect("t1")
        await publish_range(env, "t1", 0, 200)
        assert_exact(await on_a.notifications(200), range(200))
        assert_exact(await on_b.notifications(200), range(200))
        await on_a.expect_silence(0.2)
        await on_b.expect_silence(0.1)
        presence = (await a.api("GET", "/api/presence/t1")).json()
        assert presence["connections"] == 2
        await on_a.close()
        await on_b.close()


def _serve(env: dict[str, str], port: int, replica: str) -> subprocess.Popen[bytes]:
    environ = {**os.environ, **env, "HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY, "HUB_REPLICA_ID": replica}
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "serve", "--port", str(port), "--log-level", "warning"],
        env=environ,
        stdout=subprocess.DEVNULL,
    )


async def _ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_active_sequencer_killed_another_takes_over() -> None:
    async with environment() as env:
        port_a, port_b = free_port(), free_port()
        first = _serve(env, port_a, "seq-a")  # starts first: the single active consumer
        second = None
        try:
            await wait_for(lambda: _ready(port_a), timeout=30, what="replica a")
            second = _serve(env, port_b, "seq-b")
            await wait_for(lambda: _ready(port_b), timeout=30, what="replica b")
            ws = await connect(f"ws://127.0.0.1:{port_b}/ws", max_queue=None)
            client = Client(ws, binary=False)
            await client.send({"type": "connect", "token": make_token("k1")})
            assert (await client.recv())["type"] == "connected"
            publishing = asyncio.create_task(publish_range(env, "k1", 0, 400, chunk=10))
            frames = await client.notifications(100, timeout=30)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            await publishing
            print("PUBLISHED", flush=True)
            frames += await client.notifications(300, timeout=30)
            assert_exact(frames, range(400))
            await client.expect_silence(0.3)
            await client.close()
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(30)


async def test_connect_storm_never_fails_for_want_of_redis_connections() -> None:
    """Hundreds of sockets connecting at once share a bounded Redis pool: they wait, never 1011."""
    async with environment() as env, run_hub("distributed", env=env, max_connections_per_user=1000) as hub:

        async def one(i: int) -> str:
            client = await hub.connect(f"storm{i % 50}", expect_connected=False)
            frame = await client.recv(30)
            await client.close()
            return str(frame.get("type")) if frame["type"] == "connected" else f"{frame}"

        results = await asyncio.gather(*(one(i) for i in range(400)))
        failures = [r for r in results if r != "connected"]
        assert not failures, f"{len(failures)} of 400 connects failed, e.g. {failures[:3]}"


async def test_live_deliveries_need_no_ack_and_a_closed_queue_disturbs_no_other() -> None:
    """Socket queues are consumed without acks: a subscription that never acks still gets
    more than any prefetch would let through (with acks it stalled at ``prefetch``), and one
    closed with deliveries it never acked leaves its channel open for the others on it."""
    async with started_backend() as (_, settings, backend):
        broker = backend.broker
        # Subscriptions take the pooled channels in turn: the first and the last share one.
        subscriptions = [await broker.subscribe([f"user.ack{i}"]) for i in range(CHANNEL_POOL + 1)]
        abandoned, busy = subscriptions[0], subscriptions[-1]
        slot = abandoned._slot
        assert busy._slot is slot
        generation = slot.generation
        await broker.publish("user.ack0", "never acked")
        assert [n.data for n in await abandoned.receive()] == ["never acked"]
        await abandoned.close()  # without ack
        count = 300  # more than the 256 a socket got unacked when its queue was consumed with acks
        assert count < settings.socket_queue_size
        await asyncio.gather(*(broker.publish(f"user.ack{CHANNEL_POOL}", i) for i in range(count)))
        received: list[Any] = []
        async with asyncio.timeout(30):
            while len(received) < count:
                received += [n.data for n in await busy.receive()]  # never acked
        assert sorted(received) == list(range(count))
        assert slot.generation == generation  # the channel was never closed under them
        for subscription in subscriptions[1:]:
            await subscription.close()
