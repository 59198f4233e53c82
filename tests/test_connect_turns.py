"""Connects admitted in turns (hub/lease.py ``Turns``, ``HUB_CONNECT_CONCURRENCY``): a burst
queues for the backend instead of timing out together, and a turn not given in time is 1013."""

from __future__ import annotations

import asyncio

import pytest

from hub.backends.memory import MemoryBackend
from hub.lease import BackendTimeout, Turns, turns
from hub.settings import Settings
from tests.harness import run_hub


async def test_at_most_size_hold_a_turn_and_the_others_follow_in_order() -> None:
    gate = Turns(2, wait=5)
    holding: list[int] = []
    most = 0
    order: list[int] = []
    release, two_in = asyncio.Event(), asyncio.Event()

    async def one(i: int) -> None:
        nonlocal most
        async with gate.turn():
            order.append(i)
            if len(order) == 2:
                two_in.set()
            holding.append(i)
            most = max(most, len(holding))
            await release.wait()
            holding.remove(i)

    tasks = [asyncio.create_task(one(i)) for i in range(6)]
    await asyncio.wait_for(two_in.wait(), 5)
    assert order == [0, 1]  # the first two hold their turns, the rest wait
    release.set()
    await asyncio.gather(*tasks)
    assert most == 2
    assert order == list(range(6))


async def test_a_turn_not_given_within_the_wait_is_a_backend_timeout() -> None:
    gate = Turns(1, wait=0.2)
    async with gate.turn():
        with pytest.raises(BackendTimeout, match="busy"):
            async with gate.turn():
                pass
    async with gate.turn():  # the turn that timed out took nothing
        pass


async def test_a_set_up_that_raises_gives_its_turn_back() -> None:
    gate = Turns(1, wait=0.5)
    with pytest.raises(RuntimeError):
        async with gate.turn():
            raise RuntimeError("the broker refused")
    async with gate.turn():
        pass


async def test_one_backend_has_one_turns() -> None:
    backend = MemoryBackend(Settings.from_env({}, serving=False))
    assert turns(backend, 4, 1.0) is turns(backend, 4, 1.0)
    assert turns(backend, 4, 1.0).size == 4


@pytest.mark.parametrize("backend", ["memory", "distributed"])
async def test_a_burst_larger_than_the_turns_is_served_whole(backend: str) -> None:
    async with run_hub(backend, connect_concurrency=2) as hub:
        clients = await asyncio.gather(*(hub.connect(f"burst{i}") for i in range(30)))
        for client in clients:
            assert client.connected["type"] == "connected"
        await hub.publish("burst7", {"n": 1})
        (got,) = await clients[7].notifications(1)
        assert got["data"] == {"n": 1}
        await asyncio.gather(*(client.close() for client in clients))


async def test_the_turns_are_given_back_when_a_connect_fails() -> None:
    async with run_hub("memory", connect_concurrency=1, max_connections_per_user=1) as hub:
        first = await hub.connect("same")
        for _ in range(3):  # refused at the cap (4008), after holding the only turn
            refused = await hub.connect("same", expect_connected=False)
            assert (await refused.recv())["type"] == "error"
        other = await hub.connect("other")  # a turn is still free
        assert other.connected["type"] == "connected"
        await first.close()
        await other.close()
