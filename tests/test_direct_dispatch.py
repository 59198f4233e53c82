"""Deliveries handed straight to a function in the channel's reader (hub/backends/direct_dispatch.py),
on the real broker: in order, no task per delivery, a failing consumer does not stop the
channel, and a forgotten consumer falls back to aiormq's own path without losing anything.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiormq
import pytest
from aiormq.abc import DeliveredMessage

from hub.backends import direct_dispatch
from testkit.services import amqp_url, process_vhost
from testkit.waiting import wait_for


@pytest.fixture
async def channel() -> AsyncIterator[aiormq.abc.AbstractChannel]:
    connection = await aiormq.connect(amqp_url(process_vhost()))
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def queue_of(channel: aiormq.abc.AbstractChannel) -> str:
    declared = await channel.queue_declare(f"test.direct.{uuid.uuid4().hex}", exclusive=True, auto_delete=True)
    assert declared.queue is not None
    return declared.queue


async def publish(channel: aiormq.abc.AbstractChannel, queue: str, bodies: range) -> None:
    for n in bodies:
        await channel.basic_publish(str(n).encode(), routing_key=queue)


async def test_deliveries_reach_the_handler_in_order_without_a_task_each(
    channel: aiormq.abc.AbstractChannel,
) -> None:
    queue = await queue_of(channel)
    got: list[int] = []
    tasks: set[asyncio.Task[object] | None] = set()  # kept alive: no two share an id

    def handler(message: DeliveredMessage) -> None:
        got.append(int(message.body))
        tasks.add(asyncio.current_task())

    await direct_dispatch.consume(channel, queue, handler, consumer_tag=queue, no_ack=True)
    assert direct_dispatch.registered(channel) == 1  # this aiormq is hooked: the fast path is the one tested
    await publish(channel, queue, range(500))
    await wait_for(lambda: len(got) == 500, what="500 deliveries")
    assert got == list(range(500))
    assert len(tasks) == 1  # all in the channel's reader; aiormq's path makes a task per delivery


async def test_a_failing_handler_is_logged_and_the_channel_goes_on(
    channel: aiormq.abc.AbstractChannel, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await queue_of(channel)
    got: list[int] = []

    def handler(message: DeliveredMessage) -> None:
        n = int(message.body)
        if n == 3:
            raise ValueError("a bug in a consumer")
        got.append(n)

    await direct_dispatch.consume(channel, queue, handler, consumer_tag=queue, no_ack=True)
    await publish(channel, queue, range(6))
    await wait_for(lambda: len(got) == 5, what="the deliveries around the failing one")
    assert got == [0, 1, 2, 4, 5]
    assert not channel.is_closed
    assert "a consumer failed on a delivery" in caplog.text


async def test_a_forgotten_consumer_still_gets_its_deliveries_through_aiormq(
    channel: aiormq.abc.AbstractChannel,
) -> None:
    queue = await queue_of(channel)
    got: list[int] = []
    await direct_dispatch.consume(channel, queue, lambda m: got.append(int(m.body)), consumer_tag=queue, no_ack=True)
    direct_dispatch.forget(channel, queue)
    direct_dispatch.forget(channel, queue)  # idempotent
    assert direct_dispatch.registered(channel) == 0
    await publish(channel, queue, range(50))
    await wait_for(lambda: len(got) == 50, what="50 deliveries through aiormq's tasks")
    assert got == list(range(50))


async def test_a_refused_consume_leaves_nothing_registered(channel: aiormq.abc.AbstractChannel) -> None:
    connection = await aiormq.connect(amqp_url(process_vhost()))
    try:
        other = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await direct_dispatch.consume(other, "test.direct.no-such-queue", lambda m: None, consumer_tag="t")
        assert direct_dispatch.registered(other) == 0
    finally:
        await connection.close()
