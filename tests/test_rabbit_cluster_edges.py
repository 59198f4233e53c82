"""The edges of running on a RabbitMQ cluster (issue 13), each on real brokers.

- no RabbitMQ node reachable at all: open sockets are closed with 1013 after
  ``HUB_BROKER_OUTAGE_CLOSE`` seconds, not left silent (a TCP proxy the test cuts);
- ``HUB_AMQP_URL`` with several nodes: the first that answers is used, a dead one skipped;
- RESOURCE_LOCKED on the way back: bounded too, 1013, then the hub serves again;
- ``HUB_INGEST_QUEUE_TYPE=quorum`` with priorities is refused at start-up with one line;
  an existing classic ``hub.ingest`` keeps working under a quorum configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest

from hub.settings import ConfigError, Settings, redact_url
from hubnotify import Publisher
from hubnotify.failover import split_urls
from testkit.net import free_port
from tests.distributed_env import environment
from tests.harness import RunningHub, run_hub, wait_for
from tests.tcp_proxy import TcpProxy, proxied, via

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@contextlib.asynccontextmanager
async def hub_behind_a_proxy(*, outage_close: int) -> AsyncIterator[tuple[dict[str, str], TcpProxy, RunningHub]]:
    """A replica whose RabbitMQ connection goes through a proxy the test can cut, with
    ``HUB_BROKER_OUTAGE_CLOSE=outage_close`` and a 1 s backend deadline."""
    async with (
        environment() as env,
        proxied(env["HUB_AMQP_URL"]) as proxy,
        run_hub(
            "distributed",
            env={
                **env,
                "HUB_AMQP_URL": via(env["HUB_AMQP_URL"], proxy.port),
                "HUB_BROKER_OUTAGE_CLOSE": str(outage_close),
            },
            backend_timeout=1.0,
        ) as hub,
    ):
        yield env, proxy, hub


async def test_sockets_close_with_1013_while_no_broker_answers() -> None:
    async with hub_behind_a_proxy(outage_close=2) as (_, proxy, hub):
        backend: Any = hub.node.backend
        client = await hub.connect("outage1")
        proxy.cut()
        cut = time.monotonic()
        closed = await client.closed(timeout=30)
        took = time.monotonic() - cut
        assert closed.code == 1013, closed
        assert backend.broker.outage_closes == 1
        print(f"\nno broker: the socket was closed with 1013 after {took:.2f} s (HUB_BROKER_OUTAGE_CLOSE=2)")
        proxy.restore()
        await wait_for(lambda: backend.broker._up.is_set(), timeout=30, what="the hub to reconnect")
        again = await hub.connect("outage1")
        await hub.publish("outage1", "back")
        frame = await again.recv(timeout=30)
        assert (frame["type"], frame["data"]) == ("notification", "back"), frame
        await again.close()


async def test_a_short_outage_keeps_the_sockets() -> None:
    """Within ``HUB_BROKER_OUTAGE_CLOSE`` the socket stays and is restored (no 1013)."""
    async with hub_behind_a_proxy(outage_close=30) as (_, proxy, hub):
        backend: Any = hub.node.backend
        client = await hub.connect("outage2")
        proxy.cut()
        await wait_for(lambda: not backend.broker._up.is_set(), what="the hub to see the drop")
        proxy.restore()
        await wait_for(lambda: backend.broker._up.is_set(), timeout=30, what="the hub to reconnect")
        await hub.publish("outage2", "after")
        frame = await client.recv(timeout=30)
        assert (frame["type"], frame["data"]) == ("notification", "after"), frame
        assert backend.broker.outage_closes == 0
        await client.close()


async def test_a_locked_queue_after_a_reconnect_closes_the_sockets_1013() -> None:
    """RESOURCE_LOCKED on the way back (on a cluster: a survivor still holds the dead node's
    exclusive queue): the restore is retried, the sockets are closed with 1013 once
    ``HUB_BROKER_OUTAGE_CLOSE`` passed, never left silent; once the lock goes, the hub serves."""
    async with hub_behind_a_proxy(outage_close=3) as (env, proxy, hub):
        backend: Any = hub.node.backend
        client = await hub.connect("locked1")
        proxy.cut()
        await wait_for(lambda: not backend.broker._up.is_set(), what="the hub to see the drop")
        holder = await aio_pika.connect(env["HUB_AMQP_URL"])
        try:
            channel = await holder.channel()

            async def taken() -> bool:  # the broker drops the hub's exclusive queue with its connection
                nonlocal channel
                try:
                    await channel.declare_queue(backend.broker.overflow_queue, exclusive=True, auto_delete=True)
                except aiormq.exceptions.ChannelLockedResource:
                    channel = await holder.channel()  # the refusal closed the channel
                    return False
                return True

            await wait_for(taken, what="the hub's exclusive queue to be free")
            proxy.restore()
            closed = await client.closed(timeout=30)
            assert closed.code == 1013, closed
            assert backend.broker.outage_closes == 1
            assert not backend.broker._up.is_set()  # still refused (RESOURCE_LOCKED) while we hold it
        finally:
            await holder.close()
        await wait_for(lambda: backend.broker._up.is_set(), timeout=30, what="the hub to reconnect")
        again = await hub.connect("locked1")
        await hub.publish("locked1", "unlocked")
        frame = await again.recv(timeout=30)
        assert frame["data"] == "unlocked", frame
        await again.close()


async def reject_everything(env: dict[str, str], exchange: str, topic: str) -> aio_pika.abc.AbstractRobustConnection:
    """A full ``reject-publish`` queue bound to ``topic`` on ``exchange``: RabbitMQ nacks every
    publish routed to it (the way a channel can nack while a quorum queue elects a leader)."""
    connection = await aio_pika.connect_robust(env["HUB_AMQP_URL"])
    channel = await connection.channel()
    blocker = await channel.declare_queue(
        f"blocker.{topic}", exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await blocker.bind(exchange, topic)
    return connection


async def test_nacked_api_publishes_replace_the_channel_then_succeed() -> None:
    async with environment() as env, run_hub("distributed", env=env, backend_timeout=1.0) as hub:
        backend: Any = hub.node.backend
        client = await hub.connect("nack1")
        blocker = await reject_everything(env, env["HUB_EXCHANGE"], "user.nack1")
        body = {"user": "nack1", "data": "nacked", "id": "nack-1"}
        refused = await hub.api("POST", "/api/publish", json=body)
        assert refused.status_code == 503, refused.text  # nacked until the deadline
        confirming = backend.broker._confirming
        assert (confirming.nacks, confirming.replaced) >= (2, 1), (confirming.nacks, confirming.replaced)
        await blocker.close()  # the exclusive queue goes with its connection
        accepted = await hub.api("POST", "/api/publish", json=body)  # again, the same id
        assert accepted.status_code == 200, accepted.text
        frame = await client.recv(timeout=30)
        assert (frame["id"], frame["data"]) == ("nack-1", "nacked"), frame
        await client.expect_silence(0.5)  # once, though RabbitMQ took earlier tries into hub.ingest
        await client.close()


async def test_nacked_live_publishes_make_the_sequencer_replace_its_channel(caplog: pytest.LogCaptureFixture) -> None:
    async with environment() as env, run_hub("distributed", env=env, backend_timeout=1.0) as hub:
        client = await hub.connect("nack2")
        blocker = await reject_everything(env, env["HUB_LIVE_EXCHANGE"], "user.nack2")
        await hub.publish("nack2", "first", id="live-1")
        await wait_for(
            lambda: "DeliveryError" in caplog.text, timeout=30, what="the sequencer to see its live publish nacked"
        )
        await blocker.close()
        await hub.publish("nack2", "second", id="live-2")
        frames = await client.notifications(2, timeout=30)
        assert [f["id"] for f in frames] == ["live-1", "live-2"], frames
        await client.expect_silence(0.5)
        await client.close()


class SilentOnce:
    """The sequencer's live BatchPublisher, except that its first batch is never written: no
    confirm, neither ack nor nack, ever comes for it, as from a broker gone silent."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.swallowed = 0

    async def publish(self, channel: Any, messages: Any) -> asyncio.Future[None]:
        if not self.swallowed:
            self.swallowed += 1
            return asyncio.get_running_loop().create_future()
        result: asyncio.Future[None] = await self.real.publish(channel, messages)
        return result


async def test_unconfirmed_live_publishes_make_the_sequencer_replace_its_channel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch whose live confirms never come does not hold the sequencer forever: after
    CONFIRM_DEADLINES x backend_timeout it replaces its channel and the batch, redelivered,
    goes out once."""
    async with environment() as env, run_hub("distributed", env=env, backend_timeout=0.5) as hub:
        sequencer: Any = hub.node.backend._sequencer  # type: ignore[attr-defined]
        sequencer._live = silent = SilentOnce(sequencer._live)
        client = await hub.connect("mute1")
        await hub.publish("mute1", "held", id="mute-1")
        frame = await client.recv(timeout=30)
        assert (frame["id"], frame["data"]) == ("mute-1", "held"), frame
        assert silent.swallowed == 1
        assert "ConfirmTimeout" in caplog.text
        await hub.publish("mute1", "after", id="mute-2")
        [after] = await client.notifications(1, timeout=30)
        assert after["id"] == "mute-2", after
        await client.expect_silence(0.5)  # once each
        await client.close()


async def test_a_dead_node_first_in_the_list_is_skipped() -> None:
    """The hub and the publish helper connect to the first node that answers."""
    async with environment() as env:
        dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
        urls = f"{dead},{env['HUB_AMQP_URL']}"
        async with run_hub("distributed", env={**env, "HUB_AMQP_URL": urls}, backend_timeout=1.0) as hub:
            client = await hub.connect("first1")
            async with Publisher(urls, exchange=env["HUB_EXCHANGE"], timeout=5) as publisher:
                await publisher.publish("first1", "via the second node")
            frame = await client.recv(timeout=30)
            assert frame["data"] == "via the second node", frame
            await client.close()


async def test_a_classic_ingest_keeps_working_under_a_quorum_configuration() -> None:
    """An existing classic ``hub.ingest``: a replica configured for quorum uses it as it is."""
    async with environment() as env:
        async with run_hub("distributed", env=env):
            pass  # the classic queue, as an existing deployment has it
        quorum = {**env, "HUB_INGEST_QUEUE_TYPE": "quorum", "HUB_INGEST_MAX_PRIORITY": "0"}
        async with run_hub("distributed", env=quorum) as hub:
            client = await hub.connect("mig1")
            await hub.publish("mig1", "still sequenced")
            frame = await client.recv(timeout=30)
            assert (frame["data"], frame["offset"] is not None) == ("still sequenced", True), frame
            await client.close()


def test_quorum_ingest_with_priorities_is_refused() -> None:
    with pytest.raises(ConfigError, match="HUB_INGEST_MAX_PRIORITY=0"):
        Settings.from_env({"HUB_INGEST_QUEUE_TYPE": "quorum"})
    with pytest.raises(ConfigError, match="HUB_INGEST_QUEUE_TYPE"):
        Settings.from_env({"HUB_INGEST_QUEUE_TYPE": "stream"})
    settings = Settings.from_env({"HUB_INGEST_QUEUE_TYPE": "quorum", "HUB_INGEST_MAX_PRIORITY": "0"})
    assert settings.ingest_queue_type == "quorum"


def test_node_lists_are_split_and_redacted() -> None:
    assert split_urls(" amqp://a/ , amqp://b/,") == ["amqp://a/", "amqp://b/"]
    with pytest.raises(ValueError, match="one or more AMQP URLs"):
        split_urls(" , ")
    assert redact_url("amqp://u:secret@a/,amqp://u:secret@b/") == "amqp://u:***@a/,amqp://u:***@b/"
