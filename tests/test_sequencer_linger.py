"""``HUB_SEQUENCER_LINGER``: the sequencer lets a batch fill for that long (docs/operations.md §2).

Against a real distributed hub: what is published while the head of the batch lingers is
sequenced in that one batch (``hub_sequencer_batches_total``), and delivered in order.
"""

from __future__ import annotations

import pytest

from hub.publisher import Publisher
from testkit.metrics import sample
from testkit.waiting import wait_for
from tests.distributed_env import environment
from tests.harness import RunningHub, run_hub

pytestmark = pytest.mark.distributed

#: Far longer than ten confirmed publishes take, even on a loaded CI box.
LINGER = 1.0


async def sequenced(hub: RunningHub, at_least: float) -> bool:
    """Whether ``hub`` counts ``at_least`` notifications sequenced."""
    return await hub.metric("hub_sequenced_total") >= at_least


async def test_what_arrives_while_the_head_lingers_is_one_batch() -> None:
    async with environment() as env, run_hub("distributed", env=env, sequencer_linger=LINGER) as hub:
        client = await hub.connect("alice")
        async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
            for n in range(10):  # each one confirmed before the next is sent
                await publisher.publish("alice", {"n": n})
        frames = await client.notifications(10)
        assert [frame["data"]["n"] for frame in frames] == list(range(10))
        # a socket may get a notification before its batch is confirmed and counted done
        await wait_for(lambda: sequenced(hub, 10), what="the hub to count 10 sequenced")
        metrics = await hub.metrics()
        assert sample(metrics, "hub_sequenced_total") == 10
        assert sample(metrics, "hub_sequencer_batches_total") == 1
        await client.close()
