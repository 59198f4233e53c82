"""RabbitMQ and Redis for tests and benchmarks: private vhosts and private key prefixes.

Both services are shared with other people's runs, so nothing here touches what it did
not create: one RabbitMQ vhost per test process (``process_vhost``, deleted at exit), a
named one (``create_vhost``, for the benchmarks) or a fresh one for one test
(``fresh_vhost``), and per hub deployment its own exchange, queue and Redis key names
(``names``), whose Redis keys ``environment`` deletes on exit. A missing service raises
ServiceMissing, naming it and how to get it: ``make test`` installs and starts both, so
a missing one is a broken set-up, not a reason to pass quietly.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import redis.asyncio as aioredis

from testkit.net import reachable
from testkit.tokens import API_KEY, SECRET

AMQP_HOST = os.environ.get("TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("TEST_AMQP_PORT", "5672"))
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class ServiceMissing(RuntimeError):
    """A service or tool the caller needs is not there; the message says which and how to get it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"missing: {what} (run `make setup` or `make test`, which install and start it)")


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run ``rabbitmqctl args…`` and return its standard output; RuntimeError when it fails."""
    tool = shutil.which("rabbitmqctl") or shutil.which("rabbitmqctl", path="/usr/sbin:/usr/local/sbin")
    if tool is None:
        raise ServiceMissing("rabbitmqctl is not installed (Debian: apt-get install -y rabbitmq-server)")
    result = subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: exit {result.returncode}: {detail}")
    return result.stdout


def amqp_url(vhost: str) -> str:
    """The AMQP URL of ``vhost`` on the test broker (user guest)."""
    return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{quote(vhost, safe='')}"


def delete_vhost(name: str) -> None:
    """Delete vhost ``name`` and everything in it, if it exists."""
    if name in rabbitmqctl("-q", "list_vhosts", "name").split():
        rabbitmqctl("-q", "delete_vhost", name)


def create_vhost(name: str, *, fresh: bool = True) -> str:
    """Create vhost ``name`` with every right for guest; return its AMQP URL.

    With ``fresh`` a vhost of that name is deleted first, so the new one is empty.
    """
    if not reachable(AMQP_HOST, AMQP_PORT):
        raise ServiceMissing(f"RabbitMQ: nothing listens on {AMQP_HOST}:{AMQP_PORT}")
    if fresh:
        delete_vhost(name)
    rabbitmqctl("-q", "add_vhost", name)
    rabbitmqctl("-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return amqp_url(name)


_vhost: str | None = None
_vhost_lock = threading.Lock()


def _drop_at_exit(name: str) -> None:
    with contextlib.suppress(Exception):  # best effort: a leftover vhost holds only empty test queues
        delete_vhost(name)


def process_vhost() -> str:
    """This process's own vhost (created on first use, deleted when the process exits)."""
    global _vhost
    with _vhost_lock:
        if _vhost is None:
            name = f"hubtest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            try:
                create_vhost(name, fresh=False)  # a new, unique name
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                if isinstance(exc, ServiceMissing):
                    raise
                raise ServiceMissing(f"RabbitMQ: could not create a test vhost with rabbitmqctl ({exc})") from None
            atexit.register(_drop_at_exit, name)
            _vhost = name
        return _vhost


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


async def drop_redis_keys(prefix: str, url: str = REDIS_URL) -> None:
    """Delete every Redis key under ``prefix`` (only the caller's own keys: never a flush)."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


async def _check_redis(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.ping()
    except Exception as exc:
        raise ServiceMissing(f"Redis: {url} did not answer PING ({exc!r})") from None
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def fresh_vhost(tag: str = "fresh") -> AsyncIterator[str]:
    """A new, empty vhost of its own (as on a RabbitMQ nothing ever ran on), deleted afterwards;
    yields its AMQP URL. For tests of what happens before any hub declared anything."""
    name = f"hubtest-{tag}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        url = await asyncio.to_thread(create_vhost, name, fresh=False)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        if isinstance(exc, ServiceMissing):
            raise
        raise ServiceMissing(f"RabbitMQ: could not create a test vhost with rabbitmqctl ({exc})") from None
    try:
        yield url
    finally:
        await asyncio.to_thread(_drop_at_exit, name)


@contextlib.asynccontextmanager
async def environment(*, history: bool = True, tag: str | None = None) -> AsyncIterator[dict[str, str]]:
    """The HUB_* environment selecting the distributed backend for one isolated deployment.

    Its exchanges and queues live in this process's vhost under their own names; its
    Redis keys are deleted on exit. ``history=False`` adds ``HUB_HISTORY_SIZE=0``.
    """
    url = amqp_url(await asyncio.to_thread(process_vhost))
    await _check_redis(REDIS_URL)
    env = {"HUB_AMQP_URL": url, "HUB_REDIS_URL": REDIS_URL, **names(tag)}
    if not history:
        env["HUB_HISTORY_SIZE"] = "0"
    try:
        yield env
    finally:
        await drop_redis_keys(env["HUB_REDIS_PREFIX"])


@contextlib.asynccontextmanager
async def deployment(*, history: bool = True, tag: str | None = None) -> AsyncIterator[dict[str, str]]:
    """``environment`` plus the test credentials (HUB_JWT_SECRET, HUB_API_KEY): everything a
    ``hub serve`` process of an isolated distributed deployment needs."""
    async with environment(history=history, tag=tag) as env:
        yield {**env, "HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY}
