"""A small Server-Sent Events client for the SSE tests (docs/protocol.md §10): httpx
streaming, events parsed as the HTML spec says (``event``, ``id``, ``data``, comments)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from testkit.waiting import TIMEOUT


@dataclass
class Event:
    """One event, or one comment (``event`` is ``"comment"``, ``data`` its text)."""

    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class Stream:
    """An open ``GET /sse`` response."""

    def __init__(self, response: httpx.Response, base: str) -> None:
        self.response = response
        self._base = base
        self._lines = response.aiter_lines()
        self.hello: dict[str, Any] = {}
        self.last_id: str | None = None

    async def next(self, timeout: float = TIMEOUT) -> Event:
        """The next event or comment; raises TimeoutError, or EOFError when the response ended."""
        async with httpx_timeout(timeout):
            fields: dict[str, str] = {}
            data: list[str] = []
            async for line in self._lines:
                if line == "":
                    if data or fields:
                        event = Event(fields.get("event", "message"), "\n".join(data), fields.get("id"))
                        if event.id is not None:
                            self.last_id = event.id
                        return event
                    continue
                if line.startswith(":"):
                    return Event("comment", line[1:].strip())
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value
        raise EOFError("the stream ended")

    async def frame(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next protocol frame (a ``message`` event), skipping comments; ``close`` events
        come back as ``{"type": "close", "code", "reason"}``."""
        while True:
            event = await self.next(timeout)
            if event.event == "message":
                frame: dict[str, Any] = event.json()
                return frame
            if event.event == "close":
                return {"type": "close", **event.json()}

    async def notifications(self, count: int) -> list[dict[str, Any]]:
        frames = []
        while len(frames) < count:
            frame = await self.frame()
            if frame["type"] == "notification":
                frames.append(frame)
            elif frame["type"] in ("error", "close"):
                raise AssertionError(f"expected notifications, got {frame}")
        return frames

    async def post(self, http: httpx.AsyncClient, frame: Any, *, secret: str | None = None) -> httpx.Response:
        """POST one client frame to this stream (``frame`` as given when str/bytes)."""
        content = frame if isinstance(frame, str | bytes) else json.dumps(frame)
        return await http.post(
            self.hello["post"],
            content=content,
            headers={"Authorization": f"Bearer {secret or self.hello['secret']}"},
        )


@contextlib.asynccontextmanager
async def httpx_timeout(seconds: float) -> AsyncIterator[None]:
    import asyncio

    async with asyncio.timeout(seconds):
        yield


async def ticket(http: httpx.AsyncClient, token: str) -> str:
    """A ticket for ``token``, asserting a 200."""
    response = await http.post("/sse/ticket", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    value: str = response.json()["ticket"]
    return value


@contextlib.asynccontextmanager
async def open_stream(
    http: httpx.AsyncClient, token: str, *, last_event_id: str | None = None, expect: int = 200
) -> AsyncIterator[Stream]:
    """``GET /sse`` with a fresh ticket for ``token``; for a 200, the ``hub.stream`` event read."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    value = await ticket(http, token)
    async with http.stream("GET", "/sse", params={"ticket": value}, headers=headers) as response:
        assert response.status_code == expect, (response.status_code, await response.aread())
        stream = Stream(response, str(http.base_url))
        if expect == 200:
            assert response.headers["content-type"].startswith("text/event-stream")
            hello = await stream.next()
            assert hello.event == "hub.stream", hello
            stream.hello = hello.json()
        yield stream
