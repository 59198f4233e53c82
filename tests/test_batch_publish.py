"""BatchPublisher (hub/backends/batch_publish.py): the frames are pamqp's, byte for byte, and
over a real RabbitMQ a batch arrives in order with its properties, each message's confirm
resolves, and a channel the broker closes fails every confirm instead of leaving it pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pamqp.frame
import pytest
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from hub import wire
from hub.backends.batch_publish import BatchPublisher
from testkit.services import amqp_url, process_vhost


def _pamqp(channel: int, max_content: int, exchange: str, properties: Basic.Properties, rk: str, body: bytes) -> bytes:
    out = pamqp.frame.marshal(Basic.Publish(exchange=exchange, routing_key=rk), channel)
    out += pamqp.frame.marshal(ContentHeader(0, len(body), properties), channel)
    for start in range(0, len(body), max_content):
        out += pamqp.frame.marshal(ContentBody(body[start : start + max_content]), channel)
    return out


@pytest.mark.parametrize(
    "properties",
    [wire.LIVE_PROPERTIES, Basic.Properties(content_type="text/plain", headers={"a": 1}, priority=3)],
)
def test_frames_are_what_pamqp_marshals(properties: Basic.Properties) -> None:
    messages = [("user.1", b'{"type":"notification"}'), ("user.\u00e9t\u00e9", b""), ("t.x", bytes(range(256)) * 3)]
    publisher = BatchPublisher("notifications.live", properties)
    expected = b"".join(_pamqp(7, 100, "notifications.live", properties, rk, body) for rk, body in messages)
    assert publisher.frames(7, 100, messages) == expected


def test_a_routing_key_too_long_is_refused_before_anything_is_built() -> None:
    with pytest.raises(ValueError, match="routing key of at most 255 bytes, got 256"):
        BatchPublisher("x", wire.LIVE_PROPERTIES).frames(1, 1000, [("ok", b"1"), ("k" * 256, b"2")])


@pytest.fixture
async def channel() -> AsyncIterator[aiormq.Channel]:
    connection = await aio_pika.connect(amqp_url(process_vhost()), timeout=10)
    async with connection:
        robust = await connection.channel(publisher_confirms=True)
        underlay = await robust.get_underlay_channel()
        assert isinstance(underlay, aiormq.Channel)
        yield underlay


async def test_a_batch_is_confirmed_and_arrives_in_order_with_its_properties(channel: aiormq.Channel) -> None:
    declared = await channel.queue_declare(exclusive=True)
    queue = declared.queue
    assert queue is not None
    bodies = [f'{{"n":{n}}}'.encode() * (1 + n % 5000) for n in range(0, 20_000, 97)]  # some span frames
    publisher = BatchPublisher("", wire.LIVE_PROPERTIES)
    before = channel.delivery_tag
    confirmed = await publisher.publish(channel, [(queue, body) for body in bodies])
    await asyncio.wait_for(confirmed, 30)
    assert channel.delivery_tag == before + len(bodies)
    assert not channel.confirmations  # every tag settled, none left behind
    got = []
    for _ in bodies:
        message = await channel.basic_get(queue, no_ack=True, timeout=10)
        got.append(message)
    assert [m.body for m in got] == bodies
    props = got[0].header.properties
    assert (props.content_type, props.delivery_mode, props.message_id) == ("application/json", 1, None)


async def test_it_shares_delivery_tags_with_basic_publish(channel: aiormq.Channel) -> None:
    declared = await channel.queue_declare(exclusive=True)
    queue = declared.queue
    assert queue is not None
    publisher = BatchPublisher("", wire.LIVE_PROPERTIES)
    first = channel.basic_publish(b"alone", routing_key=queue)
    batch = await publisher.publish(channel, [(queue, b"a"), (queue, b"b")])
    last = channel.basic_publish(b"after", routing_key=queue)
    results = await asyncio.wait_for(asyncio.gather(first, batch, last), 10)
    assert [type(r) for r in results] == [Basic.Ack, type(None), Basic.Ack]
    assert not channel.confirmations
    empty = await publisher.publish(channel, [])
    assert empty.done()


async def test_a_channel_closed_by_the_broker_fails_every_confirm(channel: aiormq.Channel) -> None:
    publisher = BatchPublisher("no-such-exchange-here", wire.LIVE_PROPERTIES)
    confirmed = await publisher.publish(channel, [("k", b"1"), ("k", b"2"), ("k", b"3")])
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
        await asyncio.wait_for(confirmed, 10)
    with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
        await publisher.publish(channel, [("k", b"4")])


async def test_a_nack_fails_the_batch(channel: aiormq.Channel) -> None:
    declared = await channel.queue_declare(
        exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    queue = declared.queue
    assert queue is not None
    publisher = BatchPublisher("", wire.LIVE_PROPERTIES)
    confirmed = await publisher.publish(channel, [(queue, b"fits"), (queue, b"refused"), (queue, b"refused too")])
    with pytest.raises(aiormq.exceptions.DeliveryError):
        await asyncio.wait_for(confirmed, 10)
    again = await publisher.publish(channel, [(queue, b"still full")])  # the channel stays usable
    with pytest.raises(aiormq.exceptions.DeliveryError):
        await asyncio.wait_for(again, 10)


async def test_sent_without_confirms_they_arrive_in_order_with_their_properties() -> None:
    """``send``, on a channel without confirms (presence events): the same frames, nothing to settle."""
    connection = await aio_pika.connect(amqp_url(process_vhost()), timeout=10)
    async with connection:
        robust = await connection.channel(publisher_confirms=False)
        channel = await robust.get_underlay_channel()
        assert isinstance(channel, aiormq.Channel)
        declared = await channel.queue_declare(exclusive=True)
        queue = declared.queue
        assert queue is not None
        publisher = BatchPublisher("", wire.PRESENCE_PROPERTIES)
        bodies = [wire.presence_event(f"u{n}", n % 2 == 0)[1] for n in range(50)]
        for body in bodies:
            await publisher.send(channel, [(queue, body)])
        got = [await channel.basic_get(queue, no_ack=True, timeout=10) for _ in bodies]
        assert [m.body for m in got] == bodies
        props = got[0].header.properties
        assert (props.content_type, props.delivery_mode) == ("application/json", 2)
        confirming = await (await connection.channel(publisher_confirms=True)).get_underlay_channel()
        assert isinstance(confirming, aiormq.Channel)
        with pytest.raises(ValueError, match="without publisher confirms"):
            await publisher.send(confirming, [(queue, b"{}")])
