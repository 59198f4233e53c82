"""Priority notifications: an urgent one overtakes the backlog an outage left in hub.ingest.

The outage is real: no replica runs while a backlog is published into the durable
``hub.ingest`` (its length is read from RabbitMQ), then a replica comes back and a client
resumes with the ``since`` it held. With ``x-max-priority`` the urgent notification,
published last, is sequenced first: it gets the smallest offset and is the first frame
the client reads; everything else follows exactly once, in offset order. With
``HUB_INGEST_MAX_PRIORITY=0`` (a classic queue) the same publish waits its turn.
"""

from __future__ import annotations

import time
from typing import Any

import aio_pika
import pytest

from hub.publisher import Publisher
from tests.distributed_env import environment
from tests.harness import run_hub

pytestmark = pytest.mark.distributed

BACKLOG = 2000


def key(offset: str) -> tuple[int, int]:
    ms, seq = offset.split("-")
    return int(ms), int(seq)


async def ingest_length(env: dict[str, str]) -> int:
    connection = await aio_pika.connect(env["HUB_AMQP_URL"])
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(env["HUB_INGEST_QUEUE"], passive=True)
        count = queue.declaration_result.message_count
        assert count is not None
        return count


@pytest.mark.parametrize(("max_priority", "urgent_position"), [("9", 0), ("0", BACKLOG)])
async def test_an_urgent_notification_overtakes_the_backlog_of_an_outage(
    max_priority: str, urgent_position: int
) -> None:
    async with environment() as env:
        env["HUB_INGEST_MAX_PRIORITY"] = max_priority
        # The restarted replica sequences the backlog before (and while) the client connects:
        # history must hold all of it, so that the client's `since` recovers whatever went
        # live before its socket was subscribed.
        env["HUB_HISTORY_SIZE"] = str(2 * BACKLOG)
        async with run_hub("distributed", env=env) as hub:
            client = await hub.connect("alice")
            since = client.connected["offsets"]
            await client.close()
        # the outage: no replica runs; backends keep publishing into the durable hub.ingest
        async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
            await publisher.publish_many(
                [{"user": "alice", "data": {"n": n}, "id": f"bulk-{n}"} for n in range(BACKLOG)]
            )
            await publisher.publish("alice", {"code": "493817"}, message_id="2fa-code", priority=9)
        assert await ingest_length(env) == BACKLOG + 1  # the measured backlog
        async with run_hub("distributed", env=env) as hub:
            started = time.monotonic()
            client = await hub.connect("alice", since=since)
            assert client.connected["recovered"] is True
            frames: list[dict[str, Any]] = []
            urgent_after = None
            while len(frames) < BACKLOG + 1:
                (frame,) = await client.notifications(1, timeout=60)
                if frame["id"] == "2fa-code":
                    urgent_after = time.monotonic() - started
                frames.append(frame)
            all_after = time.monotonic() - started
            await client.expect_silence(0.3)
            await client.close()
    ids = [frame["id"] for frame in frames]
    assert ids.index("2fa-code") == urgent_position
    assert sorted(ids) == sorted([*(f"bulk-{n}" for n in range(BACKLOG)), "2fa-code"])  # each exactly once
    offsets = [key(frame["offset"]) for frame in frames]
    assert offsets == sorted(offsets)  # in order: offset order, which is sequencing order
    assert len(set(offsets)) == len(offsets)
    bulk = [frame["data"]["n"] for frame in frames if frame["id"] != "2fa-code"]
    assert bulk == list(range(BACKLOG))  # equal priorities keep their publish order
    print(  # the figures the report quotes (pytest -s)
        f"x-max-priority {max_priority}: backlog {BACKLOG + 1}, urgent frame #{ids.index('2fa-code')} "
        f"after {urgent_after:.2f} s, all after {all_after:.2f} s"
    )


@pytest.mark.parametrize("priority", [10, -1, 1.5, True, "9", None])
async def test_a_bad_priority_is_refused_before_anything_is_sent(priority: object) -> None:
    async with run_hub("memory") as hub:
        body: dict[str, Any] = {"user": "bob", "data": "x", "priority": priority}
        response = await hub.api("POST", "/api/publish", json=body)
        if priority is None:  # null means "not given", like id and ttl
            assert response.status_code == 200
            return
        assert response.status_code == 400
        assert "priority" in response.json()["error"]
    publisher = Publisher("amqp://unused.invalid/")
    with pytest.raises(ValueError, match="priority"):
        await publisher.publish("bob", "x", priority=priority)  # type: ignore[arg-type]


async def test_the_http_api_and_the_helper_set_the_amqp_priority() -> None:
    async with environment() as env, run_hub("distributed", env=env) as hub:
        connection = await aio_pika.connect(env["HUB_AMQP_URL"])
        async with connection:
            channel = await connection.channel()
            tap = await channel.declare_queue(exclusive=True)  # a copy of what publishers send
            await tap.bind(env["HUB_EXCHANGE"], "user.carol")
            await hub.publish("carol", "via http", priority=7)
            async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
                await publisher.publish("carol", "via the helper", priority=3)
                await publisher.publish("carol", "no priority")
            seen = []
            for _ in range(3):
                message = await tap.get(timeout=10)
                seen.append((message.body.decode(), message.priority))
                await message.ack()
    assert sorted(seen) == sorted(
        [('"via http"', 7), ('"via the helper"', 3), ('"no priority"', 0)]
    )  # unset reads as 0
