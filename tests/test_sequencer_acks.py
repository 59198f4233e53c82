"""The sequencer acks ``hub.ingest`` late, a batch's ack going with the next ones'
(``hub.backends.sequencer.ACK_DELAY``), and acks what is done before it closes: a replica
that shuts down hands the next one no redelivery of what it sequenced.
"""

from __future__ import annotations

import pytest

from hub.backends import sequencer
from hub.publisher import Publisher
from tests.distributed_env import environment
from tests.harness import run_hub

pytestmark = pytest.mark.distributed


def counter(metrics: str, name: str) -> float:
    [value] = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(f"{name} ")]
    return value


async def test_a_replica_that_stops_acks_what_it_sequenced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sequencer, "ACK_DELAY", 3600.0)  # no ack but the one its close writes
    async with environment() as env, Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
        async with run_hub("distributed", env=env) as first:
            client = await first.connect("alice")
            for n in range(5):
                await publisher.publish("alice", {"n": n})
            assert [f["data"]["n"] for f in await client.notifications(5)] == list(range(5))
            await client.close()
        async with run_hub("distributed", env=env) as second:
            client = await second.connect("alice")
            await publisher.publish("alice", {"n": 5})
            assert [f["data"]["n"] for f in await client.notifications(1)] == [5]
            metrics = (await second.http.get("/metrics")).text
            # had the first left its five unacked, they would have come here again, as duplicates
            assert counter(metrics, "hub_duplicates_total") == 0
            assert counter(metrics, "hub_sequenced_total") == 1
            await client.close()
