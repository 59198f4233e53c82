"""Steady publishing to a few users over the HTTP API, each user's frames collected: the load
under which the Redis failover tests (tests/test_redis_cluster.py,
tests/test_sentinel_failover.py) kill or fail over a primary."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tests.harness import Client, RunningHub, wait_for


def data(frames: list[dict[str, Any]]) -> list[Any]:
    """The payloads of ``frames``, in order."""
    return [frame["data"] for frame in frames]


class SteadyLoad:
    """``hub.publish`` to every user in a loop (payload n, id ``<user>-<n>``, so a retry is
    de-duplicated) and collect what each user's client receives.

    ``published[user]`` counts the publishes answered, ``frames[user]`` what arrived.
    ``stop`` ends publishing, then waits until every client got every notification published.
    """

    def __init__(self, hub: RunningHub, clients: dict[str, Client]) -> None:
        self.hub = hub
        self.clients = clients
        self.frames: dict[str, list[dict[str, Any]]] = {user: [] for user in clients}
        self.published = dict.fromkeys(clients, 0)
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._publishers: list[asyncio.Task[None]] = []
        self._receivers: list[asyncio.Task[None]] = []

    def start_publishing(self) -> None:
        self._publishers = [asyncio.create_task(self._steady(user)) for user in self.clients]

    def start_receiving(self) -> None:
        self._receivers = [asyncio.create_task(self._receive(user)) for user in self.clients]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._publishers)
        self._finished.set()
        await asyncio.wait_for(asyncio.gather(*self._receivers), 60)

    async def delivered_past(self, mark: dict[str, int], more: int = 10) -> None:
        """Wait (90 s at most) until every user got ``more`` notifications beyond ``mark``
        (the ``published`` counts taken at a fault): live delivery goes on."""
        await wait_for(
            lambda: all(len(self.frames[u]) >= mark[u] + more for u in self.clients),
            timeout=90,
            what="live delivery after the failover",
        )

    async def exact_then_resumed(self, user: str, middle: int) -> bool:
        """After ``stop``: assert ``user`` got every notification live, once and in order;
        then a client resuming after frame ``middle`` gets the rest exactly, or is told
        ``recovered: false``. Returns ``recovered``."""
        got = data(self.frames[user])
        assert got == list(range(self.published[user])), user  # nothing lost, duplicated, reordered live
        again = await self.hub.connect(user, since={f"user.{user}": self.frames[user][middle]["offset"]})
        recovered = bool(again.connected["recovered"])
        if recovered:
            assert data(await again.notifications(len(got) - middle - 1)) == got[middle + 1 :], user
        return recovered

    async def _steady(self, user: str) -> None:
        while not self._stop.is_set():
            await self.hub.publish(user, self.published[user], id=f"{user}-{self.published[user]}")
            self.published[user] += 1

    async def _receive(self, user: str) -> None:
        # until the publishers are done (a publish in flight at the stop still counts) and
        # every notification they published arrived; a recv that times out (cancel-safe) retries
        while not (self._finished.is_set() and len(self.frames[user]) >= self.published[user]):
            with contextlib.suppress(TimeoutError):
                self.frames[user].append(await self.clients[user].recv(timeout=0.5))
