"""Structured logs: ``HUB_LOG_FORMAT=json`` gives one JSON object per line, uvicorn's too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from hub import logs
from hub.settings import ConfigError, Settings
from tests.distributed_env import environment
from tests.harness import free_port, make_token, spawn_hub_serve, wait_for

REQUIRED = {"time", "level", "logger", "message", "replica"}


def record(message: str, name: str = "hub.test") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


async def test_json_lines_carry_the_socket_of_the_task_that_logged_them() -> None:
    formatter = logs.JsonFormatter("replica-1")

    async def session(conn_id: str, user: str) -> dict[str, Any]:
        logs.bind_connection(conn_id, user)
        await asyncio.sleep(0)  # let the other session run in between: contexts must not leak
        line: dict[str, Any] = json.loads(formatter.format(record(f"closing {conn_id}")))
        return line

    first, second = await asyncio.gather(session("c1", "alice"), session("c2", "bob"))
    assert first["conn_id"] == "c1"
    assert first["user"] == "alice"
    assert second["conn_id"] == "c2"
    assert second["user"] == "bob"
    outside: dict[str, Any] = json.loads(formatter.format(record('a "quoted"\nline')))
    assert set(outside) >= REQUIRED
    assert "conn_id" not in outside
    assert outside["message"] == 'a "quoted"\nline'
    assert outside["level"] == "warning"
    assert outside["replica"] == "replica-1"
    assert outside["time"].endswith("+00:00")


@dataclass
class Served:
    """A ``hub serve`` process: its port, and once it stopped, its exit status and output."""

    port: int
    returncode: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""


@contextlib.asynccontextmanager
async def hub_serve(env: dict[str, str]) -> AsyncIterator[Served]:
    """Run ``hub serve`` with ``env`` over a clean environment until it answers ``/readyz``;
    on exit, stop it with SIGTERM and keep what it wrote."""
    served = Served(free_port())
    process = await spawn_hub_serve({"HUB_PORT": str(served.port), "HUB_DRAIN_SECONDS": "0", **env})
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, timeout=30, what="hub serve to be ready")
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        served.stdout, served.stderr = await asyncio.wait_for(process.communicate(), 30)
        served.returncode = process.returncode


def test_an_unknown_log_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="HUB_LOG_FORMAT"):
        Settings.from_env({"HUB_LOG_FORMAT": "xml"})


@pytest.mark.distributed
async def test_hub_serve_logs_json_and_says_which_services_it_uses() -> None:
    async with environment() as env:
        logging_env = {
            **env,
            "HUB_API_KEY": "logs-key",
            "HUB_LOG_FORMAT": "json",
            "HUB_LOG_LEVEL": "debug",
            "HUB_REPLICA_ID": "logs-replica",
        }
        async with hub_serve(logging_env) as served:
            from websockets.asyncio.client import connect

            async with connect(f"ws://127.0.0.1:{served.port}/ws") as ws:
                await ws.send(json.dumps({"type": "connect", "token": make_token("log-user")}))
                connected = json.loads(await ws.recv())
                assert connected["type"] == "connected"
                await ws.send("not a frame")  # closed with 4002: the session logs its close
        assert served.returncode == 0, served.stderr.decode()[-2000:]
    lines = [line for line in (served.stdout + served.stderr).decode().splitlines() if line.strip()]
    assert lines, "expected log lines"
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert set(entry) >= REQUIRED, entry
        assert entry["replica"] == "logs-replica"
        entries.append(entry)
    loggers = {e["logger"] for e in entries}
    assert any(name.startswith("uvicorn") for name in loggers), loggers
    (using,) = [e["message"] for e in entries if e["message"].startswith("using ")]
    vhost = env["HUB_AMQP_URL"].rsplit("/", 1)[1]
    assert "RabbitMQ 3." in using
    assert "guest:***@" in using
    assert "guest:guest" not in using
    assert vhost in using
    assert env["HUB_REDIS_PREFIX"] in using
    assert "redis://127.0.0.1:6379" in using
    socket_lines = [e for e in entries if e.get("conn_id") == connected["conn_id"]]
    assert socket_lines, "expected lines logged for the socket, tagged with its conn_id"
    assert any(e.get("user") == "log-user" and "4002" in e["message"] for e in socket_lines), socket_lines


async def test_hub_serve_writes_no_line_per_connection_at_info() -> None:
    """uvicorn's and websockets' per-connection INFO lines ("[accepted]", "connection open",
    "connection closed") are DEBUG-only: a reconnect storm would write tens of thousands."""
    async with hub_serve({}) as served:
        from websockets.asyncio.client import connect

        for user in ("quiet-1", "quiet-2"):
            async with connect(f"ws://127.0.0.1:{served.port}/ws") as ws:
                await ws.send(json.dumps({"type": "connect", "token": make_token(user)}))
                assert json.loads(await ws.recv())["type"] == "connected"
    output = (served.stdout + served.stderr).decode()
    assert served.returncode == 0, output[-2000:]
    assert "Uvicorn running" in output or "Application startup complete" in output, output[-2000:]  # INFO is on
    for line in ("[accepted]", "connection open", "connection closed"):
        assert line not in output, output[-2000:]
