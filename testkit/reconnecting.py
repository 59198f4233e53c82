"""A WebSocket client that reconnects (through a load balancer) and resumes with ``since``.

It records every notification frame (duplicates included), every ``connected`` frame
and every close code, so a test can check exactly-once delivery across replica kills,
rolling restarts and drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from testkit.tokens import SECRET, make_token


class ReconnectingClient:
    """One user's socket on ``ws_url``, reconnected up to ``max_reconnects`` times in a row.

    ``start`` runs it in a task; ``stop`` closes it and waits for the task. ``connected``
    is set while a session is open; ``changed`` is set on every frame or state change.
    """

    def __init__(self, ws_url: str, user: str, secret: str = SECRET, *, max_reconnects: int = 100) -> None:
        self.ws_url, self.user, self.secret = ws_url, user, secret
        self.max_reconnects = max_reconnects
        self.notifications: list[dict[str, Any]] = []
        #: For each notification, the number of ``connected`` frames before it (its session, from 1).
        self.sessions: list[int] = []
        self.connects: list[dict[str, Any]] = []
        self.connect_times: list[float] = []
        self.closes: list[tuple[float, int | None]] = []
        self.offsets: dict[str, str] = {}
        self.connected = asyncio.Event()
        self.changed = asyncio.Event()
        self._stopping = False
        self._hold: asyncio.Event | None = None
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def replica(self) -> str | None:
        """The replica of the latest ``connected`` frame."""
        return str(self.connects[-1]["replica"]) if self.connects else None

    def ids(self) -> list[str]:
        """The ids of every notification received, in order, duplicates included."""
        return [str(n["id"]) for n in self.notifications]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"client-{self.user}")

    async def stop(self) -> None:
        """Close the socket and end the reconnect loop (cancelled if it does not end within 5 s)."""
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            try:
                async with asyncio.timeout(5):
                    await self._task
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def drop(self, hold: asyncio.Event | None = None) -> None:
        """Close the current socket (if any); the loop reconnects with ``since`` (once ``hold``
        is set, when given: the client stays away meanwhile)."""
        self._hold = hold
        if self._ws is not None:
            await self._ws.close()

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping and attempt <= self.max_reconnects:
            try:
                await self._session()
                attempt = 0
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
                pass
            if self._stopping:
                return
            if self._hold is not None:
                await self._hold.wait()
                self._hold = None
            attempt += 1
            await asyncio.sleep(min(0.05 * attempt, 0.5))  # reconnect backoff, not synchronisation

    async def _session(self) -> None:
        async with asyncio.timeout(10):
            ws = await connect(self.ws_url, open_timeout=5, close_timeout=2)
        self._ws = ws
        try:
            frame: dict[str, Any] = {"type": "connect", "token": make_token(self.user, ttl=600, secret=self.secret)}
            if self.offsets:
                frame["since"] = dict(self.offsets)
            await ws.send(json.dumps(frame))
            async with asyncio.timeout(10):
                first = json.loads(await ws.recv())
            if first.get("type") != "connected":
                return  # an error frame: the close that follows is recorded below
            self.connects.append(first)
            self.connect_times.append(time.monotonic())
            for topic, offset in first.get("offsets", {}).items():
                self.offsets.setdefault(topic, offset)
            self.connected.set()
            self.changed.set()
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "notification":
                    self.notifications.append(message)
                    self.sessions.append(len(self.connects))
                    if message.get("offset"):
                        self.offsets[message["topic"]] = message["offset"]
                    self.changed.set()
                elif message.get("type") == "ping":
                    await ws.send('{"type":"pong"}')
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                await ws.close()
            self.closes.append((time.monotonic(), ws.close_code))
            self.changed.set()
            self._ws = None
