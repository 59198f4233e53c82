"""A closed socket's RabbitMQ queue is kept for the next socket (hub.backends.spare_queues): its
user coming back takes it as it is, another user rebinds it, each gets only its own
notifications; a spare nobody takes is deleted after ``SPARE_SECONDS``; with
``HUB_SPARE_QUEUES=0`` a queue goes with its socket.
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote, urlsplit

import pytest

from hub.backends import spare_queues
from testkit.services import rabbitmqctl
from testkit.waiting import wait_for
from tests.distributed_env import environment
from tests.harness import RunningHub, run_hub

pytestmark = pytest.mark.distributed


def _vhost(env: dict[str, str]) -> str:
    return unquote(urlsplit(env["HUB_AMQP_URL"]).path[1:]) or "/"


async def socket_queues(env: dict[str, str]) -> list[str]:
    """The deployment's socket queues (``hub.sock.*``), by rabbitmqctl."""
    out = await asyncio.to_thread(rabbitmqctl, "list_queues", "-q", "--no-table-headers", "-p", _vhost(env), "name")
    return sorted(name for name in out.split() if name.startswith("hub.sock."))


async def bindings_of(env: dict[str, str], queue: str) -> list[str]:
    """The routing keys ``queue`` is bound with (the default exchange's implicit binding left out)."""
    out = await asyncio.to_thread(
        rabbitmqctl,
        "list_bindings",
        "-q",
        "--no-table-headers",
        "-p",
        _vhost(env),
        "source_name",
        "destination_name",
        "routing_key",
    )
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return sorted(row[2] for row in rows if len(row) == 3 and row[0] and row[1] == queue)


async def spares(hub: RunningHub, count: int) -> bool:
    return await hub.metric("hub_spare_queues") == count


@pytest.mark.parametrize("history", ["on", "off"])
async def test_a_socket_takes_back_its_queue_and_another_user_rebinds_it(history: str) -> None:
    async with environment() as env:
        if history == "off":
            env = {**env, "HUB_HISTORY_SIZE": "0"}
        # a socket binds its user's topic, and its read-state topic where there is history (§9)
        read = history == "on"

        def keys(user: str) -> list[str]:
            return [f"user.{user}", *([f"~read.{user}"] if read else [])]

        async with run_hub("distributed", env=env) as hub:
            alice = await hub.connect("alice")
            [queue] = await socket_queues(env)
            assert await bindings_of(env, queue) == keys("alice")
            await alice.close()
            await wait_for(lambda: spares(hub, 1), what="alice's queue to be kept")
            assert await bindings_of(env, queue) == keys("alice")  # kept as it is

            alice = await hub.connect("alice")  # a reload: the same topics take the queue back
            assert await socket_queues(env) == [queue]
            assert await hub.metric("hub_spare_queue_reuses_total") == 1
            await hub.publish("alice", "back")
            [frame] = await alice.notifications(1)
            assert frame["data"] == "back"
            await alice.close()
            await wait_for(lambda: spares(hub, 1), what="alice's queue to be kept again")

            bob = await hub.connect("bob")  # other topics: the queue is rebound
            assert await socket_queues(env) == [queue]
            assert await bindings_of(env, queue) == keys("bob")
            assert await hub.metric("hub_spare_queue_reuses_total") == 2
            assert await hub.metric("hub_spare_queues") == 0
            # published in this order on one path: had alice's reached bob's queue, it would come first
            await hub.publish("alice", "for alice")
            await hub.publish("bob", "for bob")
            [frame] = await bob.notifications(1)
            assert (frame["topic"], frame["data"]) == ("user.bob", "for bob")
            await bob.close()


async def test_after_a_storm_every_socket_gets_only_its_own() -> None:
    """Every socket closes at once and as many others connect: each takes one of the kept
    queues (its own user's, or another's, rebound), none gets another's notification."""
    users = [f"u{i}" for i in range(24)]
    async with environment() as env, run_hub("distributed", env=env) as hub:
        clients = [await hub.connect(user) for user in users]
        before = await socket_queues(env)
        await asyncio.gather(*(client.close() for client in clients))
        await wait_for(lambda: spares(hub, len(users)), what="every queue to be kept")
        # half of them come back, the other half are users the replica has not seen
        back = users[::2] + [f"new{i}" for i in range(len(users) // 2)]
        clients = list(await asyncio.gather(*(hub.connect(user) for user in back)))
        assert await socket_queues(env) == before  # every one taken again, none declared
        assert await hub.metric("hub_spare_queue_reuses_total") == len(users)
        for user in back:
            await hub.publish(user, f"for {user}")
        for user in users[1::2]:  # gone: nothing of theirs may reach anyone
            await hub.publish(user, f"for {user}")
        for user, client in zip(back, clients, strict=True):
            [frame] = await client.notifications(1)
            assert (frame["topic"], frame["data"]) == (f"user.{user}", f"for {user}")
        await asyncio.gather(*(client.close() for client in clients))


async def test_a_spare_nobody_takes_is_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spare_queues, "SPARE_SECONDS", 0.4)
    async with environment() as env, run_hub("distributed", env=env) as hub:
        alice = await hub.connect("alice")
        await alice.close()
        await wait_for(lambda: spares(hub, 1), what="alice's queue to be kept")
        await wait_for(lambda: spares(hub, 0), timeout=30, what="the spare to be given up")
        await wait_for(lambda: _none_left(env), timeout=30, what="RabbitMQ to delete the queue")
        assert await hub.metric("hub_spare_queue_reuses_total") == 0


async def test_with_no_spares_a_queue_goes_with_its_socket() -> None:
    async with environment() as env, run_hub("distributed", env={**env, "HUB_SPARE_QUEUES": "0"}) as hub:
        alice = await hub.connect("alice")
        [first] = await socket_queues(env)
        await alice.close()
        await wait_for(lambda: _none_left(env), timeout=30, what="RabbitMQ to delete the queue")
        bob = await hub.connect("bob")
        assert first not in await socket_queues(env)
        assert await hub.metric("hub_spare_queues") == 0
        await bob.close()


async def _none_left(env: dict[str, str]) -> bool:
    return await socket_queues(env) == []
