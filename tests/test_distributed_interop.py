"""Raw AMQP publishers (any language) against a real hub on the distributed backend."""

from __future__ import annotations

import logging

import aio_pika
import aiormq
import msgpack
import pytest

from tests import raw_amqp as raw
from tests.distributed_env import environment
from tests.harness import run_hub, wait_for

pytestmark = pytest.mark.distributed


async def test_bodies_ids_and_dead_letters() -> None:
    async with environment() as env, run_hub("distributed", env=env) as hub:
        client = await hub.connect("u1")
        connection = await aio_pika.connect(env["HUB_AMQP_URL"])
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(env["HUB_EXCHANGE"])

            async def send(body: bytes, key: str = "user.u1", **props: object) -> None:
                await exchange.publish(aio_pika.Message(body, **props), routing_key=key)  # type: ignore[arg-type]

            await send(b'{"n": 1}', content_type="application/json")
            await send(msgpack.packb({"n": 2}), content_type="application/msgpack")
            await send(msgpack.packb({"n": 2.5}), content_type="application/x-msgpack")
            await send(b'{"n": 3}')  # php-amqplib's json_encode with no content type
            await send(b"plain words")  # not JSON: relayed as a string
            await send(b"42", content_type="text/plain")
            await send(b'"once"', message_id="dup-1")
            await send(b'"once again?"', message_id="dup-1")  # same id: not appended, not sent twice
            await send(b'"x"', key="user.a*b")  # not a valid topic
            await send(b"\xc1\xff", content_type="application/msgpack")  # unreadable msgpack
            await send(b"\xff\xfe", content_type="application/json")  # not UTF-8
            await send(b'{"n": "end"}')
            got = await client.notifications(8)
            assert [n["data"] for n in got] == [
                {"n": 1},
                {"n": 2},
                {"n": 2.5},
                {"n": 3},
                "plain words",
                "42",
                "once",
                {"n": "end"},
            ]
            assert got[6]["id"] == "dup-1"
            offsets = [tuple(map(int, n["offset"].split("-"))) for n in got]
            assert offsets == sorted(offsets)
            assert len(set(offsets)) == 8
            await client.expect_silence(0.3)

            dead = await channel.declare_queue(env["HUB_DEAD_LETTER"], passive=True)
            reasons = []
            for _ in range(3):
                message = await wait_for(lambda: dead.get(fail=False), what="a dead letter")
                reasons.append(str(message.headers["x-hub-reason"]))
                await message.ack()
            assert reasons[0].startswith("invalid-topic: routing key: expected a topic"), reasons[0]
            assert reasons[1].startswith("unreadable: application/msgpack body: expected msgpack"), reasons[1]
            assert reasons[2].startswith("unreadable: application/json body: 'utf-8' codec"), reasons[2]
        history = hub.node.backend.history
        assert history is not None
        read = await history.read({"user.u1": "0-0"})
        assert len(read["user.u1"].notifications) == 8
        assert read["user.u1"].complete
        await client.close()


async def test_http_publish_goes_through_amqp() -> None:
    async with environment() as env, run_hub("distributed", env=env) as hub:
        client = await hub.connect("u2")
        answer = await hub.publish("u2", {"via": "http"}, id="h-1")
        assert answer["id"] == "h-1"
        assert answer["offset"] is None
        (frame,) = await client.notifications(1)
        assert frame["data"] == {"via": "http"}
        assert frame["offset"]
        checks = (await hub.http.get("/readyz")).json()["checks"]
        assert checks["rabbitmq"] is None
        assert checks["redis"] is None
        await client.close()


async def test_ingest_is_bounded_and_what_it_drops_is_dead_lettered() -> None:
    """With no sequencer running, hub.ingest keeps the newest ``ingest_max_length`` messages;
    the oldest go to hub.dead (RabbitMQ's own dead-lettering, x-death reason maxlen)."""
    async with environment() as env:
        async with run_hub("distributed", env=env, ingest_max_length=3):
            pass  # declares the topology, then stops: nothing consumes hub.ingest now
        connection = await aio_pika.connect(env["HUB_AMQP_URL"])
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(env["HUB_EXCHANGE"])
            for n in range(5):
                await exchange.publish(aio_pika.Message(b"%d" % n), routing_key="user.u3")
            ingest = await channel.declare_queue(env["HUB_INGEST_QUEUE"], passive=True)
            assert ingest.declaration_result.message_count == 3
            dead = await channel.declare_queue(env["HUB_DEAD_LETTER"], passive=True)
            dropped = [await wait_for(lambda: dead.get(fail=False), what="a dead letter") for _ in range(2)]
            assert [m.body for m in dropped] == [b"0", b"1"]
            assert all(m.headers["x-first-death-reason"] == "maxlen" for m in dropped)
        async with run_hub("distributed", env=env, ingest_max_length=3) as hub:
            client = await hub.connect("u3", since={"user.u3": "0-0"})
            assert [n["data"] for n in await client.notifications(3)] == [2, 3, 4]
            await client.close()


async def test_ingest_messages_older_than_history_expire_to_dead_letters() -> None:
    async with environment() as env:
        async with run_hub("distributed", env=env, history_ttl=1):
            pass
        connection = await aio_pika.connect(env["HUB_AMQP_URL"])
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(env["HUB_EXCHANGE"])
            await exchange.publish(aio_pika.Message(b'"stale"'), routing_key="user.u4")
            dead = await channel.declare_queue(env["HUB_DEAD_LETTER"], passive=True)
            expired = await wait_for(lambda: dead.get(fail=False), what="the expired message")
            assert expired.body == b'"stale"'
            assert expired.headers["x-first-death-reason"] == "expired"


async def test_an_ingest_queue_declared_with_other_arguments_is_used_as_it_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An older hub's hub.ingest (no bounds) cannot be re-declared with new arguments
    (PRECONDITION_FAILED): the hub says so in one line, with the policy to apply, and works."""
    async with environment() as env:
        connection = await aio_pika.connect(env["HUB_AMQP_URL"])
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(
                env["HUB_INGEST_QUEUE"],
                durable=True,
                arguments={"x-single-active-consumer": True, "x-dead-letter-exchange": env["HUB_DEAD_LETTER"]},
            )
        with caplog.at_level(logging.WARNING, logger="hub.topology"):
            async with run_hub("distributed", env=env) as hub:
                client = await hub.connect("u5")
                await hub.publish("u5", {"still": "works"})
                (frame,) = await client.notifications(1)
                assert frame["data"] == {"still": "works"}
                assert frame["offset"]
                await client.close()
        warnings = [r.getMessage() for r in caplog.records if r.name == "hub.topology"]
        assert len(warnings) == 1, warnings
        assert "PRECONDITION_FAILED - inequivalent arg" in warnings[0]
        assert "rabbitmqctl set_policy hub-ingest" in warnings[0]
        assert '"max-length":1000000' in warnings[0]
        assert "docs/protocol.md §5" in warnings[0]


async def test_the_sequencer_consumes_again_when_its_queue_is_deleted() -> None:
    async with environment() as env, run_hub("distributed", env=env) as hub:
        client = await hub.connect("u6")
        connection = await aio_pika.connect(env["HUB_AMQP_URL"])
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(env["HUB_INGEST_QUEUE"])

            async def consumed_again() -> bool:
                probe = await connection.channel()
                try:
                    queue = await probe.declare_queue(env["HUB_INGEST_QUEUE"], passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    return False
                await probe.close()
                return queue.declaration_result.consumer_count == 1

            await wait_for(consumed_again, what="the sequencer to consume the ingest queue again")
        await hub.publish("u6", {"after": "the delete"})
        (frame,) = await client.notifications(1)
        assert frame["data"] == {"after": "the delete"}
        await client.close()


async def test_history_off_sockets_drop_what_they_cannot_take() -> None:
    """With no sequencer, sockets read the publishers' messages themselves: one the hub cannot
    take (here, a message_id that is not UTF-8) is dropped and counted, never sent, and never
    breaks the connection that carries everyone's messages."""
    async with environment(history=False) as env, run_hub("distributed-nohistory", env=env) as hub:
        client = await hub.connect("u7")
        connection = hub.node.backend.connection
        assert connection is not None
        transport = connection.transport
        publisher = await aiormq.connect(env["HUB_AMQP_URL"])
        try:
            channel = await publisher.channel(publisher_confirms=False)
            for props in (raw.properties(message_id=b"\xff\xfe"), raw.properties(content_type=b"application/json")):
                await raw.publish_raw(channel, env["HUB_EXCHANGE"], "user.u7", b'{"n": NaN}', props)
            await raw.publish_raw(channel, env["HUB_EXCHANGE"], "user.u7", b'{"n": 1}', raw.properties())
        finally:
            await publisher.close()
        (frame,) = await client.notifications(1)
        assert frame["data"] == {"n": 1}
        await client.expect_silence(0.3)
        assert hub.node.backend.stats()["dropped"] == 2
        assert connection.transport is transport
        await client.close()
