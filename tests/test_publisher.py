"""The publish helper (async and blocking) and ``hub publish`` against a real hub."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from hub.publisher import BlockingPublisher, Publisher
from hub.settings import Settings
from hubnotify import InvalidTopic
from tests.distributed_env import environment
from tests.harness import API_KEY, SECRET, run_hub

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


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``hub <args>`` with ``env`` on top of this process's environment (minus HUB_*)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", *args, env={**base, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_blocking_publisher_and_cli() -> None:
    async with environment() as env, run_hub("distributed", env=env) as hub:
        client = await hub.connect("p2")

        def publish() -> str:
            with BlockingPublisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
                return publisher.publish("p2", {"from": "sync"})

        id = await asyncio.to_thread(publish)
        # Only what `hub publish` uses: no HUB_REDIS_URL, no credentials.
        cli_env = {"HUB_AMQP_URL": env["HUB_AMQP_URL"], "HUB_EXCHANGE": env["HUB_EXCHANGE"]}
        status, out, err = await run_cli("publish", "--user", "p2", "--id", "cli-1", '{"from": "cli"}', env=cli_env)
        assert status == 0, err
        assert json.loads(out) == {"id": "cli-1", "topic": "user.p2", "offset": None}
        got = await client.notifications(2)
        assert [(n["id"], n["data"]) for n in got] == [(id, {"from": "sync"}), ("cli-1", {"from": "cli"})]
        await client.close()


async def test_from_settings_and_the_cli_read_the_one_configuration() -> None:
    async with environment() as env, run_hub("distributed", env=env) as hub:
        client = await hub.connect("p3")
        settings = Settings.from_env(env, serving=False)  # the hub's HUB_* names, nothing copied
        async with Publisher.from_settings(settings) as publisher:
            await publisher.publish("p3", "async")
            assert await publisher.online_many(["p3", "nobody"]) == {"p3": True, "nobody": False}

        def blocking() -> bool:
            with BlockingPublisher.from_settings(settings) as publisher:
                publisher.publish("p3", "blocking")
                return publisher.is_online("p3")

        assert await asyncio.to_thread(blocking) is True
        assert [n["data"] for n in await client.notifications(2)] == ["async", "blocking"]

        full = {**env, "HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY}
        over_amqp = await run_cli("publish", "--topic", "user.p3", "amqp", env=full)
        over_http = await run_cli("publish", "--user", "p3", "http", "--url", hub.http_url, env=full)
        for status, out, err in (over_amqp, over_http):
            assert status == 0, err
            assert set(json.loads(out)) == {"id", "topic", "offset"}, out
            assert json.loads(out)["topic"] == "user.p3"
        assert [n["data"] for n in await client.notifications(2)] == ["amqp", "http"]

        status, out, err = await run_cli("presence", "p3", "nobody", env=full)  # straight from Redis
        assert status == 0, err
        assert json.loads(out) == {
            "users": {"p3": {"online": True, "connections": 1}, "nobody": {"online": False, "connections": 0}}
        }
        refused = await run_cli(
            "publish", "--user", "p3", "x", "--id", "\U0001f600" * 64, "--url", hub.http_url, env=full
        )
        assert refused[0] == 1
        assert "255" in refused[2]
        await client.close()


def test_from_settings_needs_an_amqp_url() -> None:
    # A ValueError, as ConfigError is: the helper (hubnotify) does not import the hub's errors.
    with pytest.raises(ValueError, match="HUB_AMQP_URL"):
        Publisher.from_settings(Settings.from_env({}, serving=False))
