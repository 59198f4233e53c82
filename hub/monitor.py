"""A replica's own look at itself, every few seconds, for the metrics that need a round trip.

``/metrics`` is read by Prometheus without waiting on RabbitMQ or Redis, so what needs
them is refreshed here in the background: readiness (``hub_ready``, the same checks as
``/readyz``) and, on the distributed backend, ``hub.ingest``'s length and consumers
(``observe``, exported as ``hub_ingest_backlog`` / ``hub_ingest_consumers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from hub.backends.base import Backend
from hub.metrics import Metrics

log = logging.getLogger("hub.monitor")

#: Seconds between two looks (a scrape every 15 s sees values at most this old).
INTERVAL: Final = 5.0


class Watched(Protocol):
    """What the monitor looks at: a replica's readiness, metrics and backend (``hub.node.Node``)."""

    metrics: Metrics

    @property
    def backend(self) -> Backend: ...

    async def ready(self) -> dict[str, str | None]: ...


class Monitor:
    """Runs ``look`` every ``interval`` seconds until ``stop``; each look is bounded by the
    backend's own deadlines (``backend_timeout``)."""

    def __init__(self, node: Watched, interval: float = INTERVAL) -> None:
        self._node = node
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hub-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def look(self) -> None:
        """Refresh ``hub_ready`` and the backend's observed figures once."""
        node = self._node
        checks = await node.ready()
        node.metrics.ready.set(1 if all(problem is None for problem in checks.values()) else 0)
        observe: Callable[[], Awaitable[None]] | None = getattr(node.backend, "observe", None)
        if observe is not None:
            await observe()

    async def _run(self) -> None:
        while True:
            try:
                await self.look()
            except Exception:  # a look that fails must not end the monitor
                log.exception("monitor look failed")
            await asyncio.sleep(self._interval)  # a period, not synchronisation
