"""The sequencer acks ``hub.ingest`` late, a batch's ack going with the next ones'
(``hub.backends.sequencer.ACK_DELAY``, ``hub.backends.delayed_ack``): what is done is acked
within the delay, and before the sequencer closes, so a replica that shuts down hands the
next one no redelivery of what it sequenced.
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote, urlsplit

import pytest

from hub.backends import sequencer
from hub.publisher import Publisher
from testkit.metrics import sample
from testkit.services import rabbitmqctl
from testkit.waiting import wait_for
from tests.distributed_env import environment
from tests.harness import RunningHub, run_hub

pytestmark = pytest.mark.distributed


async def counted(hub: RunningHub, name: str, at_least: float) -> bool:
    """Whether ``hub``'s counter ``name`` has reached ``at_least``."""
    return await hub.metric(name) >= at_least


async def nothing_unacked(env: dict[str, str]) -> bool:
    """Whether RabbitMQ counts no delivery of the deployment's ``hub.ingest`` as unacknowledged."""
    vhost = unquote(urlsplit(env["HUB_AMQP_URL"]).path[1:]) or "/"
    out = await asyncio.to_thread(
        rabbitmqctl, "list_queues", "-q", "--no-table-headers", "-p", vhost, "name", "messages_unacknowledged"
    )
    counts = dict(line.split() for line in out.splitlines() if line.strip())
    return int(counts[env["HUB_INGEST_QUEUE"]]) == 0


async def test_what_is_done_is_acked_within_the_delay() -> None:
    async with (
        environment() as env,
        Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher,
        run_hub("distributed", env=env) as hub,
    ):
        client = await hub.connect("alice")
        for n in range(5):
            await publisher.publish("alice", {"n": n})
        assert [f["data"]["n"] for f in await client.notifications(5)] == list(range(5))
        # the hub stays up: only the delayed ack can settle them
        await wait_for(lambda: nothing_unacked(env), timeout=30, what="hub.ingest to have nothing unacked")
        await client.close()


async def test_a_replica_that_stops_acks_what_it_sequenced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sequencer, "ACK_DELAY", 3600.0)  # no ack but the one its close writes
    async with environment() as env, Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
        async with run_hub("distributed", env=env) as first:
            client = await first.connect("alice")
            for n in range(5):
                await publisher.publish("alice", {"n": n})
            assert [f["data"]["n"] for f in await client.notifications(5)] == list(range(5))
            # a socket may get a notification before its batch is confirmed and counted done
            await wait_for(lambda: counted(first, "hub_sequenced_total", 5), what="the first to sequence 5")
            await client.close()
        async with run_hub("distributed", env=env) as second:
            client = await second.connect("alice")
            await publisher.publish("alice", {"n": 5})
            assert [f["data"]["n"] for f in await client.notifications(1)] == [5]
            # redelivered messages come first: had the first replica left its five unacked,
            # the first one done here would be one of them, counted as a duplicate
            await wait_for(lambda: counted(second, "hub_sequenced_total", 1), what="the second to sequence 1")
            metrics = await second.metrics()
            assert sample(metrics, "hub_duplicates_total") == 0
            assert sample(metrics, "hub_sequenced_total") == 1
            await client.close()
