"""The node: one replica's backend, authenticator, metrics and open sessions.

A session (hub/session.py) sees the node only through the narrow ``Host`` protocol, and
the node sees a session only as something ``Closable`` (both in hub/host.py): neither
module imports the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from hub.auth import Authenticator
from hub.backends import create_backend
from hub.backends.base import Backend, Receipt
from hub.codes import CloseCode
from hub.host import Closable
from hub.metrics import Metrics
from hub.monitor import Monitor
from hub.settings import Settings
from hub.topics import validate_topic

log = logging.getLogger("hub.node")


class Node:
    """Everything one replica shares between its sessions and HTTP routes."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.settings = settings
        self.backend = backend if backend is not None else create_backend(settings)
        self.auth = Authenticator(settings)
        self.metrics = Metrics()
        self.metrics.watch_backend(self.backend.stats)
        self.sessions: set[Closable] = set()
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self.draining = False
        self.started = False
        self.monitor = Monitor(self)

    async def start(self) -> None:
        """Start the backend; raises when its engines cannot be reached."""
        for name in self.settings.dev_defaults:
            log.warning("%s is not set: using an insecure development default (never in production)", name)
        await self.backend.start()
        self.started = True
        self.monitor.start()
        log.info("replica %s ready on the %s backend", self.settings.replica_id, self.backend.name)

    async def close(self) -> None:
        """Close every session still open, then the backend."""
        await self.monitor.stop()
        for session in list(self.sessions):
            session.close(CloseCode.SERVICE_RESTART, "replica shutting down")
        await self._wait_sessions_gone(5.0)
        await self.backend.close()
        self.started = False

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
        source: str,
    ) -> Receipt:
        """Validate ``topic`` and hand the notification to the broker; raises InvalidTopic."""
        receipt = await self.backend.broker.publish(
            validate_topic(topic), data, message_id=message_id, ttl=ttl, priority=priority
        )
        self.metrics.notifications_in.labels(source=source).inc()
        return receipt

    async def ready(self) -> dict[str, str | None]:
        """Each engine's health plus the drain state: name → None when fine, else the problem."""
        checks: dict[str, str | None] = await self.backend.check() if self.started else {"backend": "not started"}
        checks["draining"] = "draining: no new connections" if self.draining else None
        return checks

    async def drain(self, seconds: float) -> None:
        """Refuse new sockets and close open ones with 1012, spread evenly over ``seconds``.

        Returns when every session is closed (or ``seconds`` + 5 s have passed).
        """
        self.draining = True
        sessions = list(self.sessions)
        log.info("draining %d sockets over %.1f s", len(sessions), seconds)
        if sessions:
            step = seconds / len(sessions)
            for session in sessions:
                session.close(CloseCode.SERVICE_RESTART, "replica restarting: reconnect elsewhere")
                if step > 0:
                    await asyncio.sleep(step)
        await self._wait_sessions_gone(5.0)

    def register(self, session: Closable) -> None:
        """Count an open session (it will be closed by ``drain`` and ``close``).

        A session that finished its handshake after the drain started (it was
        authenticating when ``drain`` took its snapshot) is asked to close at once.
        """
        self.sessions.add(session)
        self._no_sessions.clear()
        if self.draining:
            session.close(CloseCode.SERVICE_RESTART, "replica restarting: reconnect elsewhere")

    def unregister(self, session: Closable) -> None:
        """Forget a closed session; idempotent."""
        self.sessions.discard(session)
        if not self.sessions:
            self._no_sessions.set()

    async def _wait_sessions_gone(self, limit: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self._no_sessions.wait()
