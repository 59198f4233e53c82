"""A socket's live queue (hub.backends.live_queues) without a broker: its bound, its gap.

Socket queues are consumed without acks, so nothing but the subscription's own bound keeps
a socket that stopped reading from holding every delivery in hub memory. The deliveries
here are handed straight to ``_on_message`` (what the channel's reader does for each one,
hub/backends/direct_dispatch.py), with a parse that reads them as they are.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from hub.backends.base import SubscriptionGap, SubscriptionOverflow
from hub.backends.live_queues import AmqpSubscription, ChannelSlot
from hub.settings import Settings

BOUND = 5


class Owner:
    """The broker, as a subscription sees it (``QueueOwner``)."""

    def __init__(self) -> None:
        self.settings = Settings(socket_queue_size=BOUND)
        self.bind_exchange = "notifications.live"
        self.overflow_queue = "hub.overflow.test"
        self.dropped = 0
        self.overflows = 0
        self.spares: Any = None  # nothing is closed here, only abandoned


@dataclass(frozen=True)
class Delivery:
    """What the subscription reads of a delivery: its routing key, and a body for ``parse``."""

    body: Any
    routing_key: str = "user.1"


def parse(message: Delivery) -> Any:
    if message.body == "unreadable":
        raise ValueError("not a notification")
    return message.body


def subscription() -> tuple[Owner, AmqpSubscription]:
    owner = Owner()
    slot = ChannelSlot(None)  # type: ignore[arg-type]  # never opened: no declare here
    return owner, AmqpSubscription(owner, slot, ["user.1"], parse)


async def deliver(sub: AmqpSubscription, *bodies: Any, routing_key: str = "user.1") -> None:
    for body in bodies:
        sub._on_message(Delivery(body, routing_key))  # type: ignore[arg-type]  # what it reads of one


async def test_deliveries_come_out_in_order_and_ack_is_nothing_to_send() -> None:
    _, sub = subscription()
    await deliver(sub, "a", "b")
    assert list(await sub.receive()) == ["a", "b"]
    sub.ack()
    await deliver(sub, "c")
    assert list(await sub.receive()) == ["c"]


async def test_up_to_the_bound_is_kept_past_it_the_subscription_overflows() -> None:
    owner, sub = subscription()
    await deliver(sub, *range(BOUND))
    assert list(await sub.receive()) == list(range(BOUND))  # the bound itself is not an overflow
    await deliver(sub, *range(BOUND + 1))
    with pytest.raises(SubscriptionOverflow):
        await sub.receive()
    assert owner.overflows == 1
    await deliver(sub, *range(BOUND * 3))  # what still arrives is not kept, not counted again
    assert sub._buffer == []
    assert owner.overflows == 1
    with pytest.raises(SubscriptionOverflow):
        await sub.receive()


async def test_only_what_its_own_topics_routed_is_handed_out() -> None:
    """A queue a closed socket left (hub.backends.spare_queues) may still receive what was
    routed to that socket's topics before its unbind: never handed to the next socket."""
    owner, sub = subscription()
    await deliver(sub, "for another user", routing_key="user.2")
    await deliver(sub, "mine")
    assert list(await sub.receive()) == ["mine"]
    assert owner.dropped == 0  # not unreadable: not for this socket


async def test_an_unreadable_delivery_is_counted_and_skipped() -> None:
    owner, sub = subscription()
    await deliver(sub, "a", "unreadable", "b")
    assert list(await sub.receive()) == ["a", "b"]
    assert owner.dropped == 1


async def test_a_closed_subscription_keeps_nothing() -> None:
    owner, sub = subscription()
    await deliver(sub, "a")
    sub.abandon()
    await deliver(sub, *range(BOUND * 2))
    assert sub._buffer == []
    assert owner.overflows == 0


async def test_after_a_restore_the_gap_comes_before_anything_delivered() -> None:
    """Deliveries the old queue made are kept across the suspension, but the gap is raised
    first: the back-fill starts from what the socket really got, and the cursor drops the
    kept ones it then repeats."""
    _, sub = subscription()
    await deliver(sub, "old")
    sub.suspend(asyncio.get_running_loop().time() + 10)
    waiting = asyncio.create_task(sub.receive())
    await deliver(sub, "new")  # the new queue, consumed before ``restored``
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing is handed out while the queue is being restored
    sub.restored()
    with pytest.raises(SubscriptionGap):
        await waiting
    assert list(await sub.receive()) == ["old", "new"]


async def test_while_receive_waits_a_delivery_is_offered_to_direct_first() -> None:
    _, sub = subscription()
    offered: list[Any] = []
    pending = asyncio.create_task(sub.receive(lambda n: offered.append(n) is None))  # takes each
    await asyncio.sleep(0)
    await deliver(sub, "a", "b")
    assert offered == ["a", "b"]
    assert not pending.done()
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await deliver(sub, "c")  # nobody waits: buffered, not offered
    assert offered == ["a", "b"]
    assert list(await sub.receive()) == ["c"]


async def test_nothing_is_offered_before_a_gap_is_raised() -> None:
    _, sub = subscription()
    offered: list[Any] = []
    pending = asyncio.create_task(sub.receive(lambda n: offered.append(n) is None))
    await asyncio.sleep(0)
    sub.suspend(deadline=10**9)
    await deliver(sub, "held")  # the old queue's, while the new one is not there yet
    sub.restored()
    await deliver(sub, "after")
    assert offered == []  # the back-fill goes first: both wait for the session
    with pytest.raises(SubscriptionGap):
        await pending
    assert list(await sub.receive()) == ["held", "after"]
