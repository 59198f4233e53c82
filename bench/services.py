"""RabbitMQ and Redis housekeeping: per-target vhosts and db numbers, plugin, limits.

Both services are shared with other people's tests, so the suite never touches
anything but its own ``bench-*`` vhosts and its own Redis db numbers, and only
restarts RabbitMQ (to raise its file-descriptor limit) when explicitly asked.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import time
from pathlib import Path

from bench import private
from bench.procstat import find_pids

# The shared test-support helpers (testkit/), re-exported for the targets.
from testkit.net import free_port as free_port
from testkit.services import create_vhost as _shared_create_vhost
from testkit.services import delete_vhost as _shared_delete_vhost
from testkit.services import rabbitmqctl

REDIS_BASE = "redis://127.0.0.1:6379/"


def redis_base() -> str:
    """``redis://host:port/`` of the Redis the targets use (a db number follows)."""
    node = private.current()
    return f"redis://127.0.0.1:{node.redis_port}/" if node else REDIS_BASE


def _redis_cli(*args: str) -> str:
    node = private.current()
    port = ["-p", str(node.redis_port)] if node else []
    return subprocess.run(["redis-cli", *port, *args], capture_output=True, text=True, check=True, timeout=30).stdout


def create_vhost(name: str) -> str:
    """A fresh vhost ``name`` (guest has every right) on the broker in use; its AMQP URL."""
    node = private.current()
    return node.create_vhost(name) if node else _shared_create_vhost(name)


def delete_vhost(name: str) -> None:
    """Delete vhost ``name`` (and everything in it) on the broker in use."""
    node = private.current()
    if node:
        node.delete_vhost(name)
    else:
        _shared_delete_vhost(name)


def flush_redis_db(db: int) -> None:
    """Empty Redis database ``db`` (only that one)."""
    _redis_cli("-n", str(db), "FLUSHDB")


def redis_used_memory() -> int:
    """Redis ``used_memory`` in bytes (whole server)."""
    match = re.search(r"^used_memory:(\d+)", _redis_cli("INFO", "memory"), re.M)
    return int(match.group(1)) if match else 0


def redis_commandstats() -> dict[str, tuple[int, int]]:
    """Redis ``INFO commandstats``: command → (calls, µs), since the last ``reset_redis_stats``."""
    out: dict[str, tuple[int, int]] = {}
    for m in re.finditer(r"^cmdstat_(\S+):calls=(\d+),usec=(\d+)", _redis_cli("INFO", "commandstats"), re.M):
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


def reset_redis_stats() -> None:
    """``CONFIG RESETSTAT`` — only on a private Redis (the shared one's figures are others' too)."""
    if private.current():
        _redis_cli("CONFIG", "RESETSTAT")


def rabbit_pids() -> list[int]:
    """Pids of RabbitMQ's Erlang VM (the private node's processes when one is in use)."""
    node = private.current()
    return node.rabbit_pids() if node else find_pids("beam.smp")


def redis_pids() -> list[int]:
    """Pids of redis-server (the private one when in use)."""
    node = private.current()
    return [node.redis_pid] if node else find_pids("redis-server")


def rabbit_fd_limit() -> int:
    """RabbitMQ's socket limit as ``rabbitmqctl status`` reports it (0 if unknown)."""
    out = rabbitmqctl("status")
    match = re.search(r"Sockets: \d+, limit: (\d+)", out)
    return int(match.group(1)) if match else 0


def ensure_web_stomp() -> None:
    """Enable rabbitmq_web_stomp (online) and wait until port 15674 listens."""
    enabled = subprocess.run(
        ["rabbitmq-plugins", "list", "-e", "-m"], capture_output=True, text=True, timeout=60, check=False
    ).stdout.split()
    if "rabbitmq_web_stomp" not in enabled:
        subprocess.run(
            ["rabbitmq-plugins", "enable", "rabbitmq_web_stomp"], capture_output=True, timeout=120, check=True
        )
    wait_port(15674, 30)


LIMITS_FILE = Path("/etc/security/limits.d/90-rabbitmq-bench.conf")


def restart_rabbit_with_nofile(nofile: int) -> None:
    """Restart RabbitMQ with ``ulimit -n nofile``. Only for the full run; leaves it running.

    Debian's ``rabbitmq-server`` starts the node through ``su rabbitmq``, whose PAM
    session applies ``/etc/security/limits*`` and so resets a ``ulimit`` raised here:
    the limit for the rabbitmq user is written there too (as root). Capped at this
    process's hard limit, which a container may not let anyone exceed.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY:
        nofile = min(nofile, hard)
    if os.geteuid() == 0:
        LIMITS_FILE.write_text(f"rabbitmq soft nofile {nofile}\nrabbitmq hard nofile {nofile}\n")
    subprocess.run(["rabbitmqctl", "stop"], capture_output=True, timeout=120, check=False)
    for _ in range(60):
        if not rabbit_pids():
            break
        time.sleep(1)
    started = subprocess.run(
        ["bash", "-c", f"ulimit -n {nofile} && rabbitmq-server -detached"], timeout=60, check=False
    )
    if started.returncode != 0:
        subprocess.run(["rabbitmq-server", "-detached"], timeout=60, check=True)  # never leave it stopped
    for _ in range(120):  # the node answers only once it has registered: poll, with a deadline
        ping = subprocess.run(["rabbitmq-diagnostics", "-q", "ping"], capture_output=True, timeout=30, check=False)
        if ping.returncode == 0:
            break
        time.sleep(1)
    wait_port(5672, 60)


def wait_port(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    """Return once ``host:port`` accepts a TCP connection; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), 1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} not listening after {timeout:.0f} s") from None
            time.sleep(0.1)


def declare_exchange(amqp_url: str, name: str = "notifications") -> None:
    """Declare the durable topic exchange publishers use (subscribers may bind first)."""
    import asyncio

    import aio_pika

    async def declare() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)

    asyncio.run(declare())


def wait_queue_empty(amqp_url: str, queue: str, timeout: float) -> int:
    """Wait (bounded) until ``queue`` holds no ready message; return what it still holds.

    A passive declare per poll (a missing queue counts as empty). The benchmark calls it
    before each step so that no step pays for an earlier step's backlog.
    """
    import asyncio

    import aio_pika

    async def depth() -> int:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            deadline = time.monotonic() + timeout
            while True:
                channel = await connection.channel()
                try:
                    declared = await channel.declare_queue(queue, passive=True)
                except aio_pika.exceptions.ChannelClosed:
                    return 0
                left = declared.declaration_result.message_count or 0
                await channel.close()
                if left == 0 or time.monotonic() > deadline:
                    return left
                await asyncio.sleep(0.2)  # polling a draining queue, with a deadline

    return asyncio.run(depth())
