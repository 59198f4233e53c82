"""The publish helper (async and blocking) and ``hub publish`` against a real hub."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from hub.publisher import BlockingPublisher, Publisher
from hub.topics import InvalidTopic
from tests.distributed_env import environment
from tests.harness import run_hub

pytestmark = pytest.mark.distributed


async def test_async_publisher() -> None:
    async with environment() as env, run_hub("distributed", env=env) as hub:
        client = await hub.connect("p1", token=hub.token("p1", topics=["user.p1", "broadcast"]))
        async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
            first = await publisher.publish("p1", {"k": 1}, message_id="m-1")
            assert first == "m-1"
            await publisher.publish("p1", {"k": 1}, message_id="m-1")  # a retry: de-duplicated
            await publisher.publish_topic("broadcast", "all")
            ids = await publisher.publish_many([{"user": "p1", "data": i} for i in range(50)])
            assert len(set(ids)) == 50
            with pytest.raises(InvalidTopic):
                await publisher.publish("bad.id", 1)
            with pytest.raises(InvalidTopic):
                await publisher.publish_topic("user.*", 1)
        got = await client.notifications(52)
        assert [n["data"] for n in got] == [{"k": 1}, "all", *range(50)]
        assert [n["id"] for n in got[2:]] == ids
        await client.expect_silence(0.2)
        await client.close()


async def test_blocking_publisher_and_cli() -> None:
    async with environment() as env, run_hub("distributed", env=env) as hub:
        client = await hub.connect("p2")

        def publish() -> str:
            with BlockingPublisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
                return publisher.publish("p2", {"from": "sync"})

        id = await asyncio.to_thread(publish)
        cli_env = {**os.environ, "HUB_AMQP_URL": env["HUB_AMQP_URL"], "HUB_EXCHANGE": env["HUB_EXCHANGE"]}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub",
            "publish",
            "--user",
            "p2",
            "--id",
            "cli-1",
            '{"from": "cli"}',
            env=cli_env,
            stdout=subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        assert b"cli-1" in out
        got = await client.notifications(2)
        assert [(n["id"], n["data"]) for n in got] == [(id, {"from": "sync"}), ("cli-1", {"from": "cli"})]
        await client.close()
