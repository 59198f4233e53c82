"""Isolated RabbitMQ + Redis environments for tests of the distributed backend.

The services are shared with other engineers' tests, so each test process creates its
own RabbitMQ vhost (``rabbitmqctl``, once per process, deleted at exit) and each hub
environment gets its own Redis key prefix and its own exchange and queue names inside
that vhost. A missing service fails the tests, naming it (tests/services.py).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import redis.asyncio as aioredis

from tests.services import missing

AMQP_HOST = os.environ.get("TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("TEST_AMQP_PORT", "5672"))
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_vhost: str | None = None


def _missing(service: str, detail: str) -> None:
    missing(f"{service} is not reachable for the distributed-backend tests: {detail}")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _drop_vhost(name: str) -> None:
    with contextlib.suppress(Exception):
        _rabbitmqctl("delete_vhost", name)


def vhost() -> str:
    """This process's RabbitMQ vhost (created on first use, deleted when the process exits)."""
    global _vhost
    if _vhost is None:
        if not _reachable(AMQP_HOST, AMQP_PORT):
            _missing("RabbitMQ", f"nothing listens on {AMQP_HOST}:{AMQP_PORT}")
        name = f"hubtest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            _rabbitmqctl("add_vhost", name)
            _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        except (OSError, subprocess.SubprocessError) as exc:
            _missing("RabbitMQ", f"could not create a test vhost with rabbitmqctl: {exc!r}")
        atexit.register(_drop_vhost, name)
        _vhost = name
    return _vhost


def amqp_url() -> str:
    """The AMQP URL of this process's test vhost."""
    return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{quote(vhost(), safe='')}"


def names(tag: str | None = None) -> dict[str, str]:
    """HUB_* settings that give one hub deployment its own exchanges, queues and Redis keys."""
    tag = tag or "t" + uuid.uuid4().hex[:10]
    return {
        "HUB_EXCHANGE": f"{tag}.notifications",
        "HUB_LIVE_EXCHANGE": f"{tag}.notifications-live",
        "HUB_INGEST_QUEUE": f"{tag}.ingest",
        "HUB_DEAD_LETTER": f"{tag}.dead",
        "HUB_PRESENCE_EXCHANGE": f"{tag}.presence",
        "HUB_REDIS_PREFIX": f"hubtest:{tag}:",
    }


async def drop_redis_keys(prefix: str) -> None:
    """Delete every Redis key under ``prefix`` (the test's own keys only)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def environment(*, history: bool = True, tag: str | None = None) -> AsyncIterator[dict[str, str]]:
    """The HUB_* environment of one isolated distributed deployment; its Redis keys go at exit."""
    url = amqp_url()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        _missing("Redis", f"{REDIS_URL} did not answer PING ({exc!r})")
    finally:
        await client.aclose()
    env = {"HUB_AMQP_URL": url, "HUB_REDIS_URL": REDIS_URL, **names(tag)}
    if not history:
        env["HUB_HISTORY_SIZE"] = "0"
    try:
        yield env
    finally:
        await drop_redis_keys(env["HUB_REDIS_PREFIX"])
