"""What docs/protocol.md §4 promises AMQP publishers, on the distributed backend.

A msgpack body (``application/x-msgpack`` or ``application/msgpack``) reaches sockets as
the decoded map, with and without history; a publish ``ttl`` bounds how long a message
may wait to be sequenced: one that expires first is dead-lettered by RabbitMQ (reason
``expired``), never delivered later.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import msgpack
import pytest

from hub.publisher import Publisher
from testkit import BACKENDS, RunningHub, environment, run_hub, wait_for

pytestmark = [pytest.mark.distributed]

DISTRIBUTED = sorted(name for name in BACKENDS if name.startswith("distributed"))


@pytest.fixture(params=DISTRIBUTED)
async def amqp_hub(request: pytest.FixtureRequest) -> AsyncIterator[RunningHub]:
    """A replica on each distributed backend (history on and off)."""
    async with run_hub(request.param) as running:
        yield running


async def _publish_raw(amqp_url: str, exchange: str, routing_key: str, message: aio_pika.Message) -> None:
    """Publish as any AMQP client would (confirmed), not through the hub's helper."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(message, routing_key=routing_key)


@pytest.mark.parametrize("content_type", ["application/x-msgpack", "application/msgpack"])
async def test_msgpack_body_reaches_sockets_as_the_decoded_map(amqp_hub: RunningHub, content_type: str) -> None:
    hub = amqp_hub
    data = {"text": "héllo ✓", "n": 7, "big": 2**40, "list": [1, 2.5, None, True], "nested": {"k": ["v"]}}
    json_tab = await hub.connect("mp")
    msgpack_tab = await hub.connect("mp", msgpack_protocol=True)
    body = msgpack.packb(data)
    message = aio_pika.Message(body, content_type=content_type, message_id="mp-1")
    assert hub.settings.amqp_url is not None
    await _publish_raw(hub.settings.amqp_url, hub.settings.exchange, "user.mp", message)
    for tab in (json_tab, msgpack_tab):
        [frame] = await tab.notifications(1)
        assert frame["data"] == data
        assert (frame["id"], frame["topic"]) == ("mp-1", "user.mp")
        await tab.close()


async def _dead_letter(amqp_url: str, queue: str, message_id: str) -> dict[str, Any] | None:
    """The headers of message ``message_id`` in the dead-letter queue, if it is there yet.

    Nothing is acknowledged: closing the connection puts every message back.
    """
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        dead = await channel.get_queue(queue, ensure=False)
        while (message := await dead.get(fail=False)) is not None:
            if message.message_id == message_id:
                return dict(message.headers)
    return None


def _death_reason(headers: dict[str, Any]) -> str:
    deaths = headers.get("x-death")
    reason = deaths[0].get("reason") if isinstance(deaths, list) and deaths else headers.get("x-first-death-reason")
    return reason.decode() if isinstance(reason, bytes) else str(reason)


async def test_a_publish_that_expires_before_it_is_sequenced_is_dead_lettered_not_delivered() -> None:
    """§4 ``ttl``: a message not sequenced within its ttl (no sequencer runs: every replica is
    down) is dead-lettered to ``hub.dead`` as ``expired``; a replica started later delivers the
    ones that had time left, never the expired one."""
    async with environment() as env:
        amqp_url, exchange, dead = env["HUB_AMQP_URL"], env["HUB_EXCHANGE"], env["HUB_DEAD_LETTER"]
        async with run_hub("distributed", env=env) as hub:  # declares the deployment, then stops
            probe = await hub.connect("ttl")
            since = probe.connected["offsets"]
            await probe.close()
        async with Publisher(amqp_url, exchange=exchange) as publisher:
            await publisher.publish("ttl", "expires", message_id="short", ttl=0.2)
            await publisher.publish("ttl", "in time", message_id="long", ttl=600)
        headers = await wait_for(lambda: _dead_letter(amqp_url, dead, "short"), what="the expired message in hub.dead")
        assert _death_reason(headers) == "expired", headers
        async with run_hub("distributed", env=env) as hub:
            client = await hub.connect("ttl", since=since)
            assert client.connected["recovered"] is True
            [frame] = await client.notifications(1)
            assert (frame["id"], frame["data"]) == ("long", "in time")
            await hub.publish("ttl", "after")
            [frame] = await client.notifications(1)  # the expired one never comes in between
            assert frame["data"] == "after"
            await client.close()


async def test_an_http_publish_ttl_becomes_the_message_expiration() -> None:
    """The HTTP API's ``ttl`` is the AMQP expiration: published by a replica that runs no
    sequencer (history off) into a deployment whose sequencer is down, the message waits in
    ``hub.ingest`` and is dead-lettered as ``expired`` when its ttl runs out."""
    async with environment() as env:
        async with run_hub("distributed", env=env):
            pass  # declares the deployment (hub.ingest bound to the exchange), then stops
        async with run_hub("distributed-nohistory", env={**env, "HUB_HISTORY_SIZE": "0"}) as hub:
            answer = await hub.publish("ttl", "expires", id="http-short", ttl=0.2)
            assert answer["id"] == "http-short"
        amqp_url, dead = env["HUB_AMQP_URL"], env["HUB_DEAD_LETTER"]
        headers = await wait_for(lambda: _dead_letter(amqp_url, dead, "http-short"), what="the expired message")
        assert _death_reason(headers) == "expired", headers
