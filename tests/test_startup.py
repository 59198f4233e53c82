"""``hub serve`` that cannot start says so in one line and exits 3 (docs/protocol.md §7).

Each case runs the real command against a service that refuses, or accepts TCP and never
says a word, and checks what an operator sees: exit status 3, exactly one line on
stderr, no traceback, no password.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator

import pytest

from tests.distributed_env import REDIS_URL
from tests.harness import SECRET, free_port

pytestmark = pytest.mark.distributed

AMQP_PASSWORD = "amqp-pass-w0rd"
REDIS_PASSWORD = "redis-pass-w0rd"


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A loopback port that accepts TCP connections and never sends a byte."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


async def serve(env: dict[str, str]) -> tuple[int, str]:
    """Run ``hub serve`` with ``env`` (and nothing else of HUB_*); its exit status and stderr."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    full = {
        **base,
        "HUB_JWT_SECRET": SECRET,
        "HUB_API_KEY": "startup-key",
        "HUB_PORT": str(free_port()),
        "HUB_BACKEND_TIMEOUT": "1",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", "serve", env=full, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), 40)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("`hub serve` did not give up within 40 s") from None
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


def assert_one_clear_line(status: int, stderr: str, *, mentions: list[str]) -> str:
    assert status == 3, (status, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    [line] = lines
    assert line.startswith("hub: cannot start: "), line
    assert "Traceback" not in stderr
    assert AMQP_PASSWORD not in stderr
    assert REDIS_PASSWORD not in stderr
    for word in mentions:
        assert word in line, (word, line)
    return line


def amqp_url(port: int) -> str:
    return f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:{port}/"


def redis_url(port: int) -> str:
    return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"


async def test_rabbitmq_refusing() -> None:
    port = closed_port()
    status, stderr = await serve({"HUB_AMQP_URL": amqp_url(port), "HUB_REDIS_URL": REDIS_URL})
    assert_one_clear_line(status, stderr, mentions=["RabbitMQ", f"127.0.0.1:{port}", "guest:***@"])


async def test_rabbitmq_accepting_tcp_but_never_speaking() -> None:
    async with silent_server() as port:
        status, stderr = await serve({"HUB_AMQP_URL": amqp_url(port), "HUB_REDIS_URL": REDIS_URL})
    assert_one_clear_line(status, stderr, mentions=["RabbitMQ", f"127.0.0.1:{port}"])


async def test_redis_refusing() -> None:
    port = closed_port()
    status, stderr = await serve({"HUB_AMQP_URL": amqp_url(closed_port()), "HUB_REDIS_URL": redis_url(port)})
    assert_one_clear_line(status, stderr, mentions=["Redis", f"127.0.0.1:{port}"])


async def test_redis_accepting_tcp_but_never_speaking() -> None:
    async with silent_server() as port:
        status, stderr = await serve({"HUB_AMQP_URL": amqp_url(closed_port()), "HUB_REDIS_URL": redis_url(port)})
    assert_one_clear_line(status, stderr, mentions=["Redis", f"127.0.0.1:{port}"])


async def test_the_port_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, stderr = await serve({"HUB_PORT": str(port)})
    assert_one_clear_line(status, stderr, mentions=[f"127.0.0.1:{port}"])
