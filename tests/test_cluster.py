"""Three distributed replicas behind the real HAProxy config (docker/cluster.py), end to end.

Needs RabbitMQ (rabbitmqctl, a private vhost per test process), Redis (a private key
prefix) and haproxy. A missing one fails the test with its name (tests/services.py).
Figures (clients, notifications, losses, duplicates, time until every client is
back, time until a killed replica's user goes offline) are printed; run with ``-s`` to
see them. They are figures, not assertions: the deadlines below only bound a hang, so
a busy machine cannot fail the tests.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import httpx
import pytest

from testkit import ReconnectingClient, services
from tests.services import missing
from tests.test_compose import load_cluster

cluster = load_cluster()
pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(180)]

REPLICAS = 3
USERS = 9
TTL = 3
RATE = 40.0  # notifications per second, round-robin over the users
#: Deadline for one wait (clients back, events seen): a hang bound, generous for a busy machine.
LIMIT = 30.0


def _missing(message: str) -> None:
    missing(message)


@dataclass
class Deployment:
    cluster: Any
    env: dict[str, str]
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['HUB_API_KEY']}"}

    def client(self, user: str, *, url: str | None = None, max_reconnects: int = 100) -> ReconnectingClient:
        secret = self.env["HUB_JWT_SECRET"]
        c = ReconnectingClient(url or self.cluster.ws_url, user, secret, max_reconnects=max_reconnects)
        c.start()
        return c

    async def presence(self, base_url: str, users: list[str]) -> dict[str, int]:
        async with httpx.AsyncClient(base_url=base_url, headers=self.headers, timeout=2) as http:
            response = await http.get("/api/presence", params={"user": ",".join(users)})
        response.raise_for_status()
        return {u: v["connections"] for u, v in response.json()["users"].items()}


@pytest.fixture
async def deployment() -> AsyncIterator[Deployment]:
    if cluster.find_haproxy() is None:
        _missing("haproxy is not installed (apt-get install -y haproxy)")
    try:
        async with services.deployment() as env:
            env = {**env, "HUB_PRESENCE_TTL": str(TTL), "HUB_DRAIN_SECONDS": "1", "HUB_LOG_LEVEL": "warning"}
            connection = await aio_pika.connect(env["HUB_AMQP_URL"])
            async with cluster.Cluster(REPLICAS, env) as running:
                deployment = Deployment(running, env)
                channel = await connection.channel()
                exchange = await channel.declare_exchange(
                    env["HUB_PRESENCE_EXCHANGE"], aio_pika.ExchangeType.TOPIC, durable=True
                )
                queue = await channel.declare_queue(exclusive=True)
                await queue.bind(exchange, "presence.#")

                async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                    async with message.process():
                        deployment.events.append((time.monotonic(), message.routing_key or ""))

                await queue.consume(on_event)
                try:
                    yield deployment
                finally:
                    await connection.close()
    except cluster.ClusterError as exc:
        _missing(str(exc))


async def wait_until(predicate: Any, limit: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if await predicate():
            return time.monotonic() - start
        await asyncio.sleep(0.05)  # poll interval
    pytest.fail(f"expected {what} within {limit} s")


class Publisher:
    """Publishes steadily through the LB over HTTP; a failed request is retried with the
    same id (the de-duplication key), so every id is published exactly once."""

    def __init__(self, deployment: Deployment, users: list[str]) -> None:
        self.deployment, self.users = deployment, users
        self.sent: dict[str, list[str]] = {u: [] for u in users}
        self.retries = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.sent.values())

    async def _run(self) -> None:
        n = 0
        async with httpx.AsyncClient(base_url=self.deployment.cluster.url, headers=self.deployment.headers) as http:
            while not self._stop.is_set():
                user = self.users[n % len(self.users)]
                id = f"n{n}-{uuid.uuid4().hex[:6]}"
                for _attempt in range(100):
                    try:
                        response = await http.post("/api/publish", json={"user": user, "data": n, "id": id}, timeout=5)
                        if response.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    self.retries += 1
                    await asyncio.sleep(0.05)  # retry backoff
                else:
                    pytest.fail(f"publishing {id} failed 100 times")
                self.sent[user].append(id)
                n += 1
                try:
                    async with asyncio.timeout(1 / RATE):
                        await self._stop.wait()
                except TimeoutError:
                    pass


async def all_delivered(clients: dict[str, Any], publisher: Publisher, limit: float = LIMIT) -> None:
    async def done() -> bool:
        return all(set(c.ids()) >= set(publisher.sent[u]) for u, c in clients.items())

    await wait_until(done, limit, "every client to have every notification")


def check_exactly_once(clients: dict[str, Any], publisher: Publisher) -> tuple[int, int]:
    """(losses, duplicates) over every client; also per-user order of offsets."""
    losses = duplicates = 0
    for user, client in clients.items():
        ids = client.ids()
        duplicates += len(ids) - len(set(ids))
        losses += len(set(publisher.sent[user]) - set(ids))
        offsets = [tuple(int(x) for x in n["offset"].split("-")) for n in client.notifications]
        assert offsets == sorted(offsets), f"user {user}: notifications out of order"
    return losses, duplicates


async def start_clients(d: Deployment, users: list[str]) -> dict[str, Any]:
    clients = {u: d.client(u) for u in users}
    async with asyncio.timeout(LIMIT):
        await asyncio.gather(*(c.connected.wait() for c in clients.values()))
    assert len(clients) == len(users) > 0
    return clients


async def test_spread_presence_and_delivery(deployment: Deployment) -> None:
    d = deployment
    users = [f"s{i}" for i in range(6)]
    clients = await start_clients(d, users)
    try:
        replicas = {c.replica for c in clients.values()}
        assert replicas == {"hub1", "hub2", "hub3"}, replicas
        for member in d.cluster.members:  # every replica sees every user, wherever connected
            assert await d.presence(member.url, [*users, "nobody"]) == {**dict.fromkeys(users, 1), "nobody": 0}
        async with httpx.AsyncClient(base_url=d.cluster.url, headers=d.headers) as http:
            for user in users:
                assert (await http.post("/api/publish", json={"user": user, "data": {"hi": user}})).status_code == 200

        async def arrived() -> bool:
            return all(len(c.notifications) == 1 for c in clients.values())

        await wait_until(arrived, LIMIT, "one notification per client")
        assert {u: [n["data"] for n in c.notifications] for u, c in clients.items()} == {u: [{"hi": u}] for u in users}

        async def online_events() -> bool:
            return {k for _, k in d.events} >= {f"presence.online.{u}" for u in users}

        await wait_until(online_events, LIMIT, "an online event per user")
        assert sorted(k for _, k in d.events) == sorted(f"presence.online.{u}" for u in users)
    finally:
        for c in clients.values():
            await c.stop()


async def test_kill9_under_publishing(deployment: Deployment) -> None:
    d = deployment
    users = [f"k{i}" for i in range(USERS)]
    clients = await start_clients(d, users)
    victim = d.cluster.replica(clients[users[0]].replica)
    # A user connected only to the victim, directly, who never comes back: must go offline.
    loner = d.client("loner", url=f"ws://127.0.0.1:{victim.port}/ws", max_reconnects=0)
    async with asyncio.timeout(LIMIT):
        await loner.connected.wait()
    publisher = Publisher(d, users)
    try:
        publisher.start()
        await wait_until(lambda: _true(publisher.total >= RATE), LIMIT, "publishing to start")
        moved = [u for u, c in clients.items() if c.replica == victim.name]
        assert users[0] in moved  # the victim is users[0]'s replica
        before = {u: len(clients[u].connects) for u in moved}
        victim.signal(signal.SIGKILL)
        killed = time.monotonic()

        async def back() -> bool:
            return all(len(clients[u].connects) > before[u] and clients[u].connected.is_set() for u in moved)

        await wait_until(back, LIMIT, "the victim's clients to reconnect through the LB")
        back_after = max(clients[u].connect_times[-1] for u in moved) - killed
        assert [u for u in moved if clients[u].replica == victim.name] == []
        await asyncio.sleep(1.0)  # keep publishing after everyone is back (duration, not synchronisation)
        await publisher.stop()
        await all_delivered(clients, publisher)
        losses, duplicates = check_exactly_once(clients, publisher)
        recovered = [c.connects[-1]["recovered"] for u, c in clients.items() if u in moved]

        async def offline() -> bool:
            return any(k == "presence.offline.loner" for _, k in d.events)

        # Only the presence TTL can take the loner offline (its replica died without clean-up);
        # how soon is a figure (printed), the deadline only bounds a hang.
        await wait_until(offline, 3 * TTL + LIMIT, "presence.offline.loner after the kill")
        offline_after = next(t for t, k in d.events if k == "presence.offline.loner") - killed
        survivors = [m for m in d.cluster.members if m is not victim]
        for member in survivors:
            assert await d.presence(member.url, [*users, "loner"]) == {**dict.fromkeys(users, 1), "loner": 0}
        offline_events = [k for _, k in d.events if k.startswith("presence.offline.")]
        assert offline_events == ["presence.offline.loner"]  # once; moved users never went offline
        print(
            f"\nkill -9 of {victim.name}: clients {len(clients)} (+1 loner), moved {len(moved)}, "
            f"notifications {publisher.total}, losses {losses}, duplicates {duplicates}, "
            f"publish retries {publisher.retries}, all back after {back_after:.2f} s, "
            f"recovered flags {recovered}, loner offline event after {offline_after:.2f} s (TTL {TTL})"
        )
        assert (losses, duplicates) == (0, 0)
    finally:
        for c in [*clients.values(), loner]:
            await c.stop()
        if publisher._task is not None and not publisher._task.done():
            await publisher.stop()


async def test_rolling_restart_under_publishing(deployment: Deployment) -> None:
    d = deployment
    users = [f"r{i}" for i in range(USERS)]
    clients = await start_clients(d, users)
    publisher = Publisher(d, users)
    back_times: list[float] = []
    try:
        publisher.start()
        await wait_until(lambda: _true(publisher.total >= RATE / 2), LIMIT, "publishing to start")
        for member in d.cluster.members:
            moved = [u for u, c in clients.items() if c.replica == member.name]
            # leastconn spreads the users, and a stopped replica's users move to the running ones:
            # every replica serves some when its turn comes.
            assert moved, f"expected clients on {member.name}: {[c.replica for c in clients.values()]}"
            before = {u: len(clients[u].connects) for u in moved}
            member.signal(signal.SIGTERM)
            stopped = time.monotonic()
            assert await member.wait_exit(LIMIT) == 0, member.tail()

            async def back(moved: list[str] = moved, before: dict[str, int] = before) -> bool:
                return all(len(clients[u].connects) > before[u] and clients[u].connected.is_set() for u in moved)

            await wait_until(back, LIMIT, f"the clients of {member.name} to be back")
            back_times.append(max(clients[u].connect_times[-1] for u in moved) - stopped)
            assert [clients[u].closes[-1][1] for u in moved] == [1012] * len(moved)
            await d.cluster.restart(member)
        await publisher.stop()
        await all_delivered(clients, publisher)
        losses, duplicates = check_exactly_once(clients, publisher)
        for member in d.cluster.members:
            assert await d.presence(member.url, users) == dict.fromkeys(users, 1)
        # A drained socket's user is offline until it reconnects: events alternate per user,
        # starting and ending with online.
        for user in users:
            kinds = [k.split(".")[1] for _, k in d.events if k.endswith(f".{user}")]
            assert kinds[0] == kinds[-1] == "online", (user, kinds)
            assert all(a != b for a, b in itertools.pairwise(kinds)), (user, kinds)
        print(
            f"\nrolling restart of {REPLICAS} replicas: clients {len(clients)}, notifications {publisher.total}, "
            f"losses {losses}, duplicates {duplicates}, publish retries {publisher.retries}, "
            f"clients back after {[round(t, 2) for t in back_times]} s (from SIGTERM, drain 1 s)"
        )
        assert (losses, duplicates) == (0, 0)
    finally:
        for c in clients.values():
            await c.stop()
        if publisher._task is not None and not publisher._task.done():
            await publisher.stop()


async def _true(value: bool) -> bool:
    return value
