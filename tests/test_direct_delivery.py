"""A live notification written where it arrives (``Subscription.receive``'s ``direct``, hub/delivery.py).

While a session waits for live notifications with nothing queued on its socket, one that
arrives is written by the backend's own task (the AMQP reader, the memory broker's
publish) instead of waking the session's task. From the first one it cannot write at
once, notifications are buffered and the session takes them as before, so the order on
the socket is the order of arrival whichever way each one went.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from hub.backends.memory import MemoryBroker
from hub.delivery import Delivery
from hub.notification import Notification
from tests.harness import run_hub


def answering(answer: bool, offered: list[Any]) -> Callable[[Notification], bool]:
    """A ``direct`` that records what it is offered and answers ``answer``."""

    def direct(notification: Notification) -> bool:
        offered.append(notification.data)
        return answer

    return direct


async def waiting(receive: Any) -> asyncio.Task[Any]:
    """``receive`` started and parked (it waits for the next notification)."""
    task = asyncio.create_task(receive)
    await asyncio.sleep(0)
    assert not task.done()
    return task


async def test_while_receive_waits_each_notification_is_offered_to_direct_first() -> None:
    broker = MemoryBroker(None, bound=10)
    sub = await broker.subscribe(["user.1"])
    taken: list[Any] = []
    pending = await waiting(sub.receive(answering(True, taken)))
    await broker.publish("user.1", "a")
    await broker.publish("user.1", "b")
    assert taken == ["a", "b"]
    assert not pending.done()  # the waiting task was never woken
    pending.cancel()


async def test_from_the_first_one_direct_declines_they_are_buffered_in_order() -> None:
    broker = MemoryBroker(None, bound=10)
    sub = await broker.subscribe(["user.1"])
    offered: list[Any] = []

    def decline_b(notification: Notification) -> bool:
        offered.append(notification.data)
        return bool(notification.data != "b")

    pending = await waiting(sub.receive(decline_b))
    for data in ("a", "b", "c"):
        await broker.publish("user.1", data)
    assert offered == ["a", "b"]  # "c" came behind a buffered "b": not offered
    assert [n.data for n in await pending] == ["b", "c"]


async def test_nothing_is_offered_while_nobody_waits() -> None:
    broker = MemoryBroker(None, bound=10)
    sub = await broker.subscribe(["user.1"])
    offered: list[Any] = []
    first = await waiting(sub.receive(answering(False, offered)))
    await broker.publish("user.1", "a")  # declined: buffered, the receiver woken
    assert [n.data for n in await first] == ["a"]
    await broker.publish("user.1", "b")  # nobody waits now: buffered, never offered
    assert offered == ["a"]
    assert [n.data for n in await sub.receive(answering(True, offered))] == ["b"]
    assert offered == ["a"]


@pytest.fixture
def direct_writes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What every ``Delivery._write_direct`` answered, in this test's sessions."""
    answers: list[bool] = []
    original = Delivery._write_direct

    def counted(self: Delivery, notification: Notification) -> bool:
        answer = original(self, notification)
        answers.append(answer)
        return answer

    monkeypatch.setattr(Delivery, "_write_direct", counted)
    return answers


@pytest.mark.parametrize("backend", ["memory", "distributed"])
async def test_a_waiting_socket_is_written_from_where_notifications_arrive(
    backend: str, direct_writes: list[bool]
) -> None:
    async with run_hub(backend) as hub:
        client = await hub.connect("7")
        for n in range(20):  # one at a time: the session waits for each
            await hub.publish("7", n)
            (frame,) = await client.notifications(1)
            assert frame["data"] == n
        assert direct_writes.count(True) >= 20
        burst = 100  # published back to back: some written directly, the rest by the session
        for n in range(burst):
            await hub.publish("7", 100 + n)
        frames = await client.notifications(burst)
        assert [f["data"] for f in frames] == list(range(100, 100 + burst))
        await client.close()
