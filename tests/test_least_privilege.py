"""The shipped RabbitMQ permissions (docker/rabbitmq-definitions.json), enforced by a real broker.

A private vhost of the shared RabbitMQ gets two users with the `hub` and `publisher`
permissions of the definitions file, exactly as written there. The hub runs with the
`hub` user (history on and off); the `publisher` user reaches a socket through
`notifications`, and is refused everything else: the live exchange (forged offsets),
the presence exchange (forged presence events), the default exchange (a message put
straight into a socket's queue), reading or declaring any queue. The users and the
vhost are deleted at the end of the module.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aio_pika
import aiormq
import pytest

from hub.publisher import Publisher
from tests.definitions import DEFAULT_NAMES, shipped
from tests.distributed_env import AMQP_HOST, AMQP_PORT, REDIS_URL, drop_redis_keys
from tests.harness import run_hub, wait_for
from tests.services import missing

pytestmark = pytest.mark.distributed

#: A live frame with an offset far ahead: on the live exchange it would mute the socket.
FORGED = b'{"type":"notification","id":"x","topic":"user.8","offset":"9999999999999-0","ts":1,"data":"forged"}'


def rabbitmqctl(*args: str) -> str:
    """The shared node's rabbitmqctl (used only on this module's own vhost and users)."""
    try:
        result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        missing(f"rabbitmqctl for the shared RabbitMQ ({exc!r})")
    return result.stdout.decode()


def shipped_permissions() -> dict[str, dict[str, str]]:
    """User → its configure/write/read patterns, as docker/rabbitmq-definitions.json grants them."""
    return {p["user"]: p for p in shipped()["permissions"]}


@dataclass(frozen=True)
class Vhost:
    name: str
    passwords: dict[str, str]
    users: dict[str, str]  # role in the definitions file → the user created for it

    def url(self, role: str) -> str:
        user = self.users[role]
        return (
            f"amqp://{quote(user, safe='')}:{self.passwords[user]}@{AMQP_HOST}:{AMQP_PORT}/{quote(self.name, safe='')}"
        )


@pytest.fixture(scope="module")
def vhost() -> Iterator[Vhost]:
    tag = uuid.uuid4().hex[:8]
    name = f"hubtest-privileges-{tag}"
    roles = {"hub": f"hubtest-hub-{tag}", "publisher": f"hubtest-publisher-{tag}", "guest": "guest"}
    passwords = {user: uuid.uuid4().hex for user in roles.values() if user != "guest"}
    passwords["guest"] = "guest"
    permissions = shipped_permissions()
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")  # the test's own inspection
        for role in ("hub", "publisher"):
            user = roles[role]
            rabbitmqctl("add_user", user, passwords[user])
            p = permissions[role]
            rabbitmqctl("set_permissions", "-p", name, user, p["configure"], p["write"], p["read"])
        yield Vhost(name, passwords, roles)
    finally:
        for role in ("hub", "publisher"):
            subprocess.run(["rabbitmqctl", "-q", "delete_user", roles[role]], capture_output=True, check=False)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, check=False)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"hubtest:priv:{uuid.uuid4().hex[:8]}:"
    yield prefix
    await drop_redis_keys(prefix)


def hub_env(vhost: Vhost, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "HUB_AMQP_URL": vhost.url("hub"),
        "HUB_REDIS_URL": REDIS_URL,
        "HUB_REDIS_PREFIX": prefix,
        **DEFAULT_NAMES,
        **extra,
    }


@pytest.mark.parametrize("history", ["on", "off"])
async def test_hub_runs_with_the_hub_user_and_the_publisher_reaches_a_socket(
    vhost: Vhost, redis_prefix: str, history: str
) -> None:
    extra = {"HUB_HISTORY_SIZE": "0"} if history == "off" else {}
    async with run_hub("distributed", env=hub_env(vhost, redis_prefix, **extra)) as hub:
        # presence events go to hub.presence (the hub's write permission); guest listens
        inspector = await aio_pika.connect(vhost.url("guest"))
        async with inspector:
            channel = await inspector.channel()
            events = await channel.declare_queue(exclusive=True)
            await events.bind("hub.presence", "presence.#")
            client = await hub.connect("7")
            event = await wait_for(lambda: events.get(fail=False, no_ack=True), what="a presence event")
            assert event.routing_key == "presence.online.7"

            async with Publisher(vhost.url("publisher")) as publisher:
                await publisher.publish("7", {"text": "from the publisher user"}, message_id="p-1")
                (frame,) = await client.notifications(1)
                assert frame["data"] == {"text": "from the publisher user"}
                assert frame["id"] == "p-1"
                assert (frame.get("offset") is not None) == (history == "on")

                # the HTTP API publishes with the hub user (write on notifications)
                await hub.publish("7", "via http")
                assert [n["data"] for n in await client.notifications(1)] == ["via http"]

                if history == "on":
                    # an invalid routing key is dead-lettered by the sequencer (write on hub.dead)
                    await publisher.publish_topic("broadcast", "fine")  # a valid topic nobody binds
                    raw = await aio_pika.connect(vhost.url("publisher"))
                    async with raw:
                        exchange = await (await raw.channel(publisher_confirms=True)).get_exchange(
                            "notifications", ensure=False
                        )
                        await exchange.publish(aio_pika.Message(b'"bad"'), routing_key="user.a*b")
                    dead = await channel.declare_queue("hub.dead", passive=True)
                    letter = await wait_for(lambda: dead.get(fail=False), what="a dead letter")
                    assert str(letter.headers["x-hub-reason"]).startswith("invalid-topic:")
                    await letter.ack()
            # readiness (a probe through the default exchange) and hub.ingest's length (a
            # passive declare) work with the hub's permissions too
            await hub.node.monitor.look()
            assert "\nhub_ready 1.0\n" in (await hub.http.get("/metrics")).text
            assert ("ingest_backlog" in hub.node.backend.stats()) == (history == "on")
            await client.close()


async def refused(url: str, action: Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]) -> str:
    """Run ``action`` on a fresh channel of a fresh connection; return the broker's refusal."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        try:
            await action(channel)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            return str(exc)
        raise AssertionError("expected RabbitMQ to refuse (ACCESS_REFUSED), it allowed it")


async def test_the_publisher_user_is_refused_everything_but_notifications(vhost: Vhost, redis_prefix: str) -> None:
    publisher = vhost.url("publisher")
    async with run_hub("distributed", env=hub_env(vhost, redis_prefix)) as hub:
        client = await hub.connect("8")  # a socket queue (hub.sock.<hex>) exists from here on

        async def publish(exchange: str, key: str) -> Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]:
            async def act(channel: aio_pika.abc.AbstractChannel) -> Any:
                if exchange == "":
                    target = channel.default_exchange
                else:
                    target = await channel.get_exchange(exchange, ensure=False)
                return await target.publish(aio_pika.Message(FORGED), routing_key=key)

            return act

        # a forged, already-sequenced notification on the live exchange
        reason = await refused(publisher, await publish("notifications.live", "user.8"))
        assert "notifications.live" in reason
        # a forged presence event
        assert "hub.presence" in await refused(publisher, await publish("hub.presence", "presence.online.8"))
        # straight into a queue through the default exchange (a socket's or the ingest queue)
        assert "amq.default" in await refused(publisher, await publish("", "hub.ingest"))
        # reading any queue: ingest (take others' notifications), dead letters, a socket's
        for queue in ("hub.ingest", "hub.dead"):

            async def read(channel: aio_pika.abc.AbstractChannel, queue: str = queue) -> Any:
                q = await channel.get_queue(queue, ensure=False)
                return await q.get(fail=False)

            assert queue in await refused(publisher, read)

        async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            raise AssertionError(f"expected no delivery, got {message.body!r}")

        async def consume(channel: aio_pika.abc.AbstractChannel) -> Any:
            q = await channel.get_queue("hub.ingest", ensure=False)
            return await q.consume(ignore)

        assert "hub.ingest" in await refused(publisher, consume)

        # declaring a queue of its own (to bind it to notifications.live and read it)
        async def declare(channel: aio_pika.abc.AbstractChannel) -> Any:
            return await channel.declare_queue("spy", auto_delete=True)

        assert "spy" in await refused(publisher, declare)

        async def declare_exchange(channel: aio_pika.abc.AbstractChannel) -> Any:
            return await channel.declare_exchange("notifications.live", aio_pika.ExchangeType.TOPIC, durable=True)

        assert "notifications.live" in await refused(publisher, declare_exchange)

        # and after all that, the one thing it may do still works
        async with Publisher(publisher) as allowed:
            await allowed.publish("8", "still allowed")
        assert [n["data"] for n in await client.notifications(1)] == ["still allowed"]
        # nothing forged reached the socket
        await client.expect_silence(0.3)
        await client.close()
