"""Outages of RabbitMQ and Redis, refused and stalled, through a TCP proxy the test controls.

What must hold (docs/protocol.md §3, §7; the deadline is ``HUB_BACKEND_TIMEOUT``): while a
service is away, a new WebSocket is answered 1013 and ``/api/publish`` 503 (when it needs
that service) within a few deadlines, never a hang or a 500; ``/readyz`` says 503 and
names the service; presence does not keep counting refused sockets; and once the service
is back the hub recovers by itself. Start-up against a service that refuses or never
speaks fails fast with one line naming the service, without its password. Deadlines are
asserted as "answered before a generous bound", never as tight timings.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from hub.backends.base import BackendUnavailable
from hub.backends.distributed import DistributedBackend
from hub.settings import Settings
from tests.distributed_env import environment, vhost
from tests.harness import API_KEY, SECRET, Client, RunningHub, free_port, run_hub, wait_for
from tests.tcp_proxy import TcpProxy, proxied, via

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

#: HUB_BACKEND_TIMEOUT in these tests: small, so an outage is answered quickly.
DEADLINE = 1.0
#: "Within the deadline", generously: the machine running the tests may be busy.
BOUND = 3 * DEADLINE

T = TypeVar("T")


async def answered(call: Awaitable[T]) -> T:
    """``call``'s result, failing the test when it took longer than ``BOUND``."""
    began = time.monotonic()
    result = await call
    took = time.monotonic() - began
    assert took < BOUND, f"answered after {took:.2f} s, expected within {BOUND:g} s"
    return result


def fault(proxy: TcpProxy, mode: str) -> None:
    if mode == "refused":
        proxy.cut()
    else:
        proxy.stall()


async def refused_connect(hub: RunningHub, user: str) -> None:
    """A new socket during the outage: 1013 within the bound, not a hang in the handshake."""
    client = await hub.connect(user, expect_connected=False)
    closed = await answered(client.closed(timeout=BOUND + 5))
    assert closed.code == 1013, closed
    assert closed.error is not None
    assert closed.error["code"] == 1013


async def delivered(client: Client, data: Any) -> None:
    """Read ``client`` until the notification with ``data`` (an earlier publish that timed out
    may still arrive first: a 503 after a deadline does not say the broker did not take it)."""
    while True:
        frame = await client.recv(timeout=30)
        assert frame["type"] == "notification", frame
        if frame["data"] == data:
            return


@pytest.mark.parametrize("mode", ["refused", "stalled"])
async def test_rabbitmq_outage(mode: str) -> None:
    async with (
        environment() as env,
        proxied(env["HUB_AMQP_URL"]) as proxy,
        run_hub(
            "distributed",
            env={**env, "HUB_AMQP_URL": via(env["HUB_AMQP_URL"], proxy.port)},
            backend_timeout=DEADLINE,
        ) as hub,
    ):
        backend: Any = hub.node.backend
        before = await hub.connect("o1")
        fault(proxy, mode)
        readyz = await answered(hub.http.get("/readyz"))
        if mode == "refused" and readyz.status_code == 200:  # the drop takes a moment to be seen
            await wait_for(lambda: not backend.connection.connected.is_set(), what="the drop to be seen")
            readyz = await answered(hub.http.get("/readyz"))
        assert readyz.status_code == 503, readyz.text
        assert readyz.json()["checks"]["rabbitmq"] is not None
        assert readyz.json()["checks"]["redis"] is None

        await refused_connect(hub, "o2")
        assert (await hub.api("GET", "/api/presence/o2")).json()["connections"] == 0  # not a phantom

        published = await answered(hub.api("POST", "/api/publish", json={"user": "o1", "data": "during"}))
        assert published.status_code == 503, published.text

        proxy.restore()
        await wait_for(lambda: _ready(hub), timeout=30, what="the hub to be ready again")
        after = await hub.connect("o1")
        assert (await hub.publish("o1", "after"))["id"]
        await delivered(after, "after")
        await delivered(before, "after")  # the socket that lived through it is served again
        assert backend.broker.restore_failures == 0
        # A subscribe that outlived its deadline left no queue behind once the broker answered.
        await wait_for(lambda: _socket_queues(2), timeout=30, what="one queue per open socket")
        await before.close()
        await after.close()


@pytest.mark.parametrize("mode", ["refused", "stalled"])
async def test_redis_outage(mode: str) -> None:
    async with (
        environment() as env,
        proxied(env["HUB_REDIS_URL"], 6379) as proxy,
        run_hub(
            "distributed",
            env={**env, "HUB_REDIS_URL": via(env["HUB_REDIS_URL"], proxy.port), "HUB_PRESENCE_TTL": "2"},
            backend_timeout=DEADLINE,
        ) as hub,
    ):
        before = await hub.connect("r1")
        fault(proxy, mode)
        readyz = await answered(hub.http.get("/readyz"))
        assert readyz.status_code == 503, readyz.text
        assert readyz.json()["checks"]["redis"] is not None
        assert readyz.json()["checks"]["rabbitmq"] is None

        await refused_connect(hub, "r2")
        presence = await answered(hub.api("GET", "/api/presence/r2"))
        assert presence.status_code == 503, presence.text
        # Publishing needs only RabbitMQ: accepted now, sequenced when Redis is back.
        published = await answered(hub.api("POST", "/api/publish", json={"user": "r1", "data": "during"}))
        assert published.status_code == 200, published.text

        proxy.restore()
        await wait_for(lambda: _ready(hub), timeout=30, what="the hub to be ready again")
        await delivered(before, "during")
        after = await hub.connect("r2")
        await hub.publish("r2", "after")
        await delivered(after, "after")

        async def counted() -> bool:  # the refused socket stopped counting; the open ones count
            answer = await hub.api("GET", "/api/presence?user=r1,r2")
            users = answer.json()["users"]
            return bool(users["r1"]["connections"] == 1 and users["r2"]["connections"] == 1)

        await wait_for(counted, timeout=30, what="presence to count exactly the open sockets")
        await before.close()
        await after.close()


async def test_publish_and_readyz_answer_during_an_amqp_stall_without_sockets() -> None:
    """The HTTP side alone: no socket holds a channel busy, the deadline still holds."""
    async with (
        environment() as env,
        proxied(env["HUB_AMQP_URL"]) as proxy,
        run_hub(
            "distributed", env={**env, "HUB_AMQP_URL": via(env["HUB_AMQP_URL"], proxy.port)}, backend_timeout=DEADLINE
        ) as hub,
    ):
        proxy.stall()
        answers = await answered(
            asyncio.gather(
                hub.http.get("/readyz"),
                hub.api("POST", "/api/publish", json={"user": "h1", "data": 1}),
                hub.api("POST", "/api/publish", json={"topic": "news", "data": 2}),
            )
        )
        assert [a.status_code for a in answers] == [503, 503, 503], [a.text for a in answers]
        proxy.restore()
        await wait_for(lambda: _ready(hub), timeout=30, what="the hub to be ready again")
        assert (await hub.api("POST", "/api/publish", json={"user": "h1", "data": 3})).status_code == 200


@pytest.mark.parametrize(
    ("service", "mode"), [("rabbitmq", "refused"), ("rabbitmq", "stalled"), ("redis", "stalled"), ("redis", "refused")]
)
async def test_start_fails_fast_with_one_clear_line(service: str, mode: str) -> None:
    async with (
        environment() as env,
        proxied(env["HUB_AMQP_URL" if service == "rabbitmq" else "HUB_REDIS_URL"]) as proxy,
    ):
        key = "HUB_AMQP_URL" if service == "rabbitmq" else "HUB_REDIS_URL"
        if mode == "refused":
            url = via(env[key], free_port())  # nothing listens there
        else:
            proxy.stall()  # TCP is accepted, the service never speaks
            url = via(env[key], proxy.port)
        if service == "redis":
            url = url.replace("redis://", "redis://:sekrit@")  # a password that must not be shown
        environ = {**env, key: url, "HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY}
        backend = DistributedBackend(Settings.from_env(environ, backend_timeout=DEADLINE))
        with pytest.raises(BackendUnavailable) as failure:
            await answered(backend.start())
        message = str(failure.value)
        name = "RabbitMQ" if service == "rabbitmq" else "Redis"
        assert message.startswith(f"{name} at "), message
        assert "\n" not in message
        assert ":guest@" not in message
        assert "sekrit" not in message
        if mode == "stalled":
            assert message.endswith(f"did not answer within {DEADLINE:g} s"), message
        assert f":{url.rsplit(':', 1)[1].split('/')[0]}" in message  # names the port it tried
        await backend.close()  # idempotent after a failed start
        lingering = [t for t in asyncio.all_tasks() if "connection_factory" in repr(t.get_coro())]
        assert not lingering, lingering  # no reconnection loop left running


async def test_a_queue_that_cannot_be_restored_closes_its_socket() -> None:
    """Restore vs overflow: a live queue the broker refuses after a reconnect is retried until
    its deadline, then the socket is closed with 1013, counted as a restore failure (not as an
    overflow, not "too slow"); the hub serves again once the broker accepts queues."""
    async with (
        environment() as env,
        proxied(env["HUB_AMQP_URL"]) as proxy,
        run_hub(
            "distributed", env={**env, "HUB_AMQP_URL": via(env["HUB_AMQP_URL"], proxy.port)}, backend_timeout=DEADLINE
        ) as hub,
    ):
        backend: Any = hub.node.backend
        client = await hub.connect("lost1")
        proxy.cut()
        await wait_for(lambda: not backend.connection.connected.is_set(), what="the hub to see the drop")
        await _permissions(configure=r"^(?!hub\.sock\.).*")  # every exchange and queue but sockets'
        try:
            proxy.restore()
            closed = await client.closed(timeout=30)
            assert closed.code == 1013, closed
            assert "too slow" not in closed.reason
            assert backend.broker.restore_failures == 1
            assert backend.broker.overflows == 0
            metrics = (await hub.http.get("/metrics")).text
            assert "hub_restore_failures_total 1.0" in metrics
            assert "hub_socket_overflows_total 0.0" in metrics
        finally:
            await _permissions(configure=".*")
        again = await wait_for(lambda: _connected(hub, "lost1"), timeout=30, what="a connect to succeed again")
        await hub.publish("lost1", "back")
        await delivered(again, "back")
        await again.close()


async def _ready(hub: RunningHub) -> bool:
    return (await hub.http.get("/readyz")).status_code == 200


async def _connected(hub: RunningHub, user: str) -> Client | None:
    client = await hub.connect(user, expect_connected=False)
    frame = await client.recv()
    if frame["type"] == "connected":
        return client
    await client.close()
    return None


async def _socket_queues(count: int) -> bool:
    """Whether the test's vhost holds exactly ``count`` per-socket queues (rabbitmqctl, off the loop)."""
    command = ["rabbitmqctl", "-q", "list_queues", "-p", vhost(), "name", "--no-table-headers"]
    done = await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True, text=True, timeout=60)
    return sum(1 for name in done.stdout.split() if name.startswith("hub.sock.")) == count


async def _permissions(*, configure: str) -> None:
    """Set the test vhost's configure permission for guest (rabbitmqctl, off the event loop)."""
    command = ["rabbitmqctl", "-q", "set_permissions", "-p", vhost(), "guest", configure, ".*", ".*"]
    await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True, timeout=60)


async def test_a_replica_shuts_down_while_both_services_stall() -> None:
    """Every part of the backend is closed within its own deadline: a replica whose RabbitMQ
    and Redis stop answering mid-life still finishes shutting down (no stuck lifespan)."""
    async with (
        environment() as env,
        proxied(env["HUB_AMQP_URL"]) as amqp,
        proxied(env["HUB_REDIS_URL"], 6379) as redis,
        run_hub(
            "distributed",
            env={
                **env,
                "HUB_AMQP_URL": via(env["HUB_AMQP_URL"], amqp.port),
                "HUB_REDIS_URL": via(env["HUB_REDIS_URL"], redis.port),
            },
            backend_timeout=DEADLINE,
        ) as hub,
    ):
        client = await hub.connect("s1")
        await hub.publish("s1", "before")
        await delivered(client, "before")
        amqp.stall()
        redis.stall()
        async with asyncio.timeout(30):  # run_hub's own wait; a stuck close would never end
            await hub.node.close()
        assert not hub.node.started
        amqp.restore()
        redis.restore()
