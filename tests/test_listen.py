"""``hub listen``: the README's tour, run as typed, against a running embedded hub.

The command runs as a subprocess (the console script of this virtualenv), as in a
terminal: it connects, prints ``connected`` on stderr, and prints each notification on
stdout as one JSON line until it is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hub.settings import DEV_API_KEY
from tests.harness import SECRET, RunningHub, make_token, run_hub

HUB = str(Path(sys.executable).parent / "hub")
LINE_TIMEOUT = 15.0


@contextlib.asynccontextmanager
async def listening(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    """``hub listen args`` as a subprocess; killed at the end if still running."""
    environ = {"PATH": str(Path(sys.executable).parent), **(env or {})}
    process = await asyncio.create_subprocess_exec(
        HUB, "listen", *args, env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def line(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    text = (await asyncio.wait_for(stream.readline(), LINE_TIMEOUT)).decode()
    assert text, "the stream ended"
    return text


async def publish(hub: RunningHub, api_key: str, user: str, data: Any) -> dict[str, Any]:
    response = await hub.api(
        "POST", "/api/publish", json={"user": user, "data": data}, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_the_tour_as_typed() -> None:
    """No HUB_JWT_SECRET anywhere: the hub and ``hub listen`` both use the development secret."""
    async with (
        run_hub("memory", env={"HUB_JWT_SECRET": "", "HUB_API_KEY": ""}) as hub,
        listening("--user", "42", env={"HUB_URL": hub.http_url}) as listen,
    ):
        status = await line(listen.stderr)
        assert "connected as user 42" in status, status
        sent = await publish(hub, DEV_API_KEY, "42", {"text": "hello"})
        printed = json.loads(await line(listen.stdout))
        assert printed["type"] == "notification"
        assert (printed["id"], printed["topic"], printed["data"]) == (sent["id"], "user.42", {"text": "hello"})
        await publish(hub, DEV_API_KEY, "42", "line\nbreak")
        assert json.loads(await line(listen.stdout))["data"] == "line\nbreak"  # still one line

        listen.send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.wait_for(listen.wait(), LINE_TIMEOUT) == 0


async def test_token_option_and_refused_token() -> None:
    async with run_hub("memory") as hub:
        token = make_token("7", topics=["team.1"])
        async with listening("--token", token, "--url", hub.ws_url) as listen:
            assert "connected as user 7" in await line(listen.stderr)
            await hub.publish(topic="team.1", data="for the team")
            assert json.loads(await line(listen.stdout))["topic"] == "team.1"
            listen.terminate()
            assert await asyncio.wait_for(listen.wait(), LINE_TIMEOUT) == 0

        bad = make_token("7", secret=SECRET + "-not-the-hub's")
        async with listening("--token", bad, "--url", hub.ws_url) as listen:
            assert await asyncio.wait_for(listen.wait(), LINE_TIMEOUT) == 1
            assert listen.stderr is not None
            errors = (await listen.stderr.read()).decode()
            assert "the hub closed the socket: 4001" in errors, errors


async def test_no_hub_listening() -> None:
    async with listening("--user", "42", "--url", "ws://127.0.0.1:9/ws") as listen:
        assert await asyncio.wait_for(listen.wait(), LINE_TIMEOUT) == 1
        assert listen.stderr is not None
        assert "cannot open ws://127.0.0.1:9/ws" in (await listen.stderr.read()).decode()
