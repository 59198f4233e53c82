"""A WebSocket test client speaking protocol v1 (docs/protocol.md §3), JSON or msgpack.

It answers pings (unless told not to), reads frames with deadlines and reports how a
socket ended (``Closed``: the close code, its reason and the ``error`` frame before it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from testkit.waiting import TIMEOUT


@dataclass
class Closed:
    """How a socket ended: the close code, its reason and the ``error`` frame before it."""

    code: int | None
    reason: str
    error: dict[str, Any] | None


@dataclass
class Client:
    """One socket of protocol v1; ``binary`` selects msgpack (``hub.v1.msgpack``) frames."""

    ws: ClientConnection
    binary: bool
    connected: dict[str, Any] = field(default_factory=dict)
    answer_pings: bool = True
    pings: int = 0

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one frame map in this socket's encoding."""
        await self.ws.send(msgpack.packb(frame) if self.binary else json.dumps(frame))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame other than ``ping`` (pings are answered with ``pong`` unless disabled).

        Raises TimeoutError after ``timeout`` seconds, ConnectionClosed when the socket ends.
        """
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            if self.binary:
                assert isinstance(raw, bytes), f"expected a binary frame, got {raw!r:.60}"
                frame: dict[str, Any] = msgpack.unpackb(raw)
            else:
                assert isinstance(raw, str), f"expected a text frame, got {raw!r:.60}"
                frame = json.loads(raw)
            if frame.get("type") == "ping":
                self.pings += 1
                if self.answer_pings:
                    await self.send({"type": "pong"})
                    continue
            return frame

    async def notifications(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Exactly the next ``count`` notification frames; AssertionError on anything else."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            try:
                frame = await self.recv(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                got = [f.get("data") for f in found]
                raise AssertionError(
                    f"expected {count} notifications within {timeout:g} s, got {len(found)}: {got}"
                ) from None
            assert frame["type"] == "notification", f"expected a notification, got {frame}"
            found.append(frame)
        return found

    async def expect_silence(self, seconds: float = 0.3) -> None:
        """Assert that no frame (other than pings) arrives for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            frame = await self.recv(seconds)
            raise AssertionError(f"expected no frame, got {frame}")

    async def closed(self, timeout: float = TIMEOUT) -> Closed:
        """Read until the hub closes the socket; return the close and the error frame before it.

        Notifications still in flight are read and dropped on the way.
        """
        error = None
        try:
            while True:
                frame = await self.recv(timeout)
                if frame.get("type") == "error":
                    error = frame
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            return Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "", error)

    async def close(self) -> None:
        """Close the socket from the client side (normal closure)."""
        await self.ws.close()
