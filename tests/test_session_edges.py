"""Hostile input and sick peers at the session, on every backend (docs/protocol.md §3, §5, §8).

Each test asserts the named outcome (a close code with its ``error`` frame, a flag in
``connected``, a metric) and that the hub keeps serving another user meanwhile.
Stalls are injected at the backend seam (``Stalling`` below, over the real backend):
one call for one user hangs until the test lets it go, as a stalled Redis or RabbitMQ
would; everything else goes to the real engines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx
import pytest

from hub.backends import create_backend
from hub.backends.base import Backend, Connection, Direct, HistoryRead, Reads, Receipt, Subscription
from hub.codes import CloseCode
from hub.node import Node
from hub.notification import Notification
from hub.server import build_server
from hub.settings import Settings
from testkit.metrics import sample
from tests.harness import API_KEY, BACKENDS, SECRET, WITH_HISTORY, RunningHub, free_port, make_token, wait_for
from tests.test_closes import expect_close, raw_client


async def still_serves(hub: RunningHub, user: str = "witness") -> None:
    """Another user connects and gets a notification."""
    witness = await hub.connect(user)
    await hub.publish(user, "still here")
    [frame] = await witness.notifications(1)
    assert frame["data"] == "still here"
    await witness.close()


# ----------------------------------------------------------------------- offsets


@pytest.mark.parametrize(
    "offset",
    ["\u0661-\u0662", "1-\u0663", "\uff11-0", f"{2**64}-0", f"0-{2**64}", "9" * 20 + "-0"],
    ids=["arabic-indic", "mixed", "fullwidth", "ms-2^64", "seq-2^64", "twenty-nines"],
)
async def test_a_bad_since_offset_is_4002(hub: RunningHub, offset: str) -> None:
    client = await hub.connect("42", since={"user.42": offset}, expect_connected=False)
    assert "offset" in await expect_close(client, CloseCode.PROTOCOL_ERROR)
    await still_serves(hub)


async def test_a_future_since_is_clamped_and_live_delivery_goes_on(hub: RunningHub) -> None:
    """Before: the embedded backend muted every live notification below the made-up offset,
    Redis answered 1013 on every reconnect. Now: recovered false, offsets at the latest."""
    await hub.publish("7", "before")
    probe = await hub.connect("7")
    latest = probe.connected["offsets"]
    await probe.close()
    future = f"{2**64 - 1}-{2**64 - 1}"
    client = await hub.connect("7", since={"user.7": future})
    assert client.connected["recovered"] is False
    assert client.connected["offsets"] == latest  # the latest offset, a valid since from now on
    await hub.publish("7", "live")
    [frame] = await client.notifications(1)
    assert frame["data"] == "live"
    await client.expect_silence()
    await client.close()
    if hub.history:
        again = await hub.connect("7", since={"user.7": frame["offset"]})
        assert again.connected["recovered"] is True
        await again.close()


async def test_a_future_since_on_one_topic_keeps_the_others_recovered(history_hub: RunningHub) -> None:
    hub = history_hub
    token = make_token("8", topics=["team.1"])
    first = await hub.connect(token=token)
    await hub.publish("8", "own")
    await hub.publish(None, "team news", topic="team.1")
    own, news = await first.notifications(2)
    await first.close()
    await hub.publish(None, "missed", topic="team.1")
    client = await hub.connect(token=token, since={"user.8": "99999999999999-0", "team.1": news["offset"]})
    assert client.connected["recovered"] is False  # one topic could not be resumed
    assert client.connected["offsets"]["user.8"] == own["offset"]  # clamped to its latest offset
    [frame] = await client.notifications(1)  # the other one still is, without a gap
    assert frame["data"] == "missed"
    await hub.publish("8", "live")  # and the clamped topic is live again
    [frame] = await client.notifications(1)
    assert frame["data"] == "live"
    await client.close()


# ------------------------------------------------------------------ client frames


@pytest.mark.parametrize("where", ["first frame", "after connect"])
async def test_sixty_thousand_brackets_are_4002(hub: RunningHub, where: str) -> None:
    """Before: RecursionError in json.loads, 1011 and an ERROR traceback."""
    client = await raw_client(hub) if where == "first frame" else await hub.connect("42")
    await client.ws.send("[" * 60_000)
    assert "nested" in await expect_close(client, CloseCode.PROTOCOL_ERROR)
    await still_serves(hub)
    text = await hub.metrics()
    assert sample(text, 'hub_closes_total{code="1011"}') == 0
    assert sample(text, 'hub_errors_total{where="session"}') == 0


async def test_deep_msgpack_is_4002(hub: RunningHub) -> None:
    client = await raw_client(hub, binary=True)
    await client.ws.send(b"\x91" * 60_000 + b"\xc0")
    await expect_close(client, CloseCode.PROTOCOL_ERROR)
    await still_serves(hub)


@pytest.mark.parametrize("frame", ['{"type":"pong","x":NaN}', '{"type":"refresh","token":"\\ud800"}'])
async def test_json_that_no_client_could_read_back_is_4002(hub: RunningHub, frame: str) -> None:
    client = await hub.connect("42")
    await client.ws.send(frame)
    await expect_close(client, CloseCode.PROTOCOL_ERROR)


async def test_a_notification_msgpack_cannot_carry_is_refused_at_the_edge(hub: RunningHub) -> None:
    """An integer past 64 bits is valid JSON, but msgpack cannot encode it: the publish is
    refused (400, docs/protocol.md §4) instead of reaching a msgpack socket it would break,
    and both sockets of the user go on receiving."""
    packed = await hub.connect("42", msgpack_protocol=True)
    plain = await hub.connect("42")
    response = await hub.api("POST", "/api/publish", json={"user": "42", "data": {"n": 2**70}})
    assert response.status_code == 400, response.text
    assert "msgpack" in response.json()["error"]
    await hub.publish("42", "next")
    assert [f["data"] for f in await plain.notifications(1)] == ["next"]
    assert [f["data"] for f in await packed.notifications(1)] == ["next"]
    await packed.close()
    await plain.close()


# ------------------------------------------------------------------------ refresh


async def test_a_refresh_that_takes_a_topic_away_is_4003(hub: RunningHub) -> None:
    """docs/protocol.md §8: a revoked topic is not left in force until the next reconnect."""
    client = await hub.connect(token=make_token("42", topics=["team.1", "team.2"]))
    await client.send({"type": "refresh", "token": make_token("42", topics=["team.1"])})
    assert "team.2" in await expect_close(client, CloseCode.FORBIDDEN)
    await still_serves(hub)


async def test_a_refresh_with_the_same_or_more_topics_keeps_the_socket(hub: RunningHub) -> None:
    client = await hub.connect(token=make_token("42", topics=["team.1"]))
    await client.send({"type": "refresh", "token": make_token("42", topics=["team.1"], ttl=600)})
    await client.send({"type": "refresh", "token": make_token("42", topics=["team.1", "team.9"], ttl=600)})
    await hub.publish(None, "granted at connect", topic="team.1")
    await hub.publish(None, "granted only by the refresh", topic="team.9")  # takes effect on reconnect
    await hub.publish("42", "own")
    assert [f["data"] for f in await client.notifications(2)] == ["granted at connect", "own"]
    await client.expect_silence()
    await client.close()


async def test_a_refresh_without_topics_takes_the_extra_ones_away(hub: RunningHub) -> None:
    client = await hub.connect(token=make_token("42", topics=["team.1"]))
    await client.send({"type": "refresh", "token": make_token("42")})
    await expect_close(client, CloseCode.FORBIDDEN)


# ------------------------------------------------------------------------ metrics


async def test_hub_connects_total_counts_every_accepted_connection(hub: RunningHub) -> None:
    assert await hub.metric("hub_connects_total") == 0
    first = await hub.connect("1")
    second = await hub.connect("1", since={"user.1": "0-0"})  # a reconnect counts as a connect too
    refused = await hub.connect(token="not-a-jwt", expect_connected=False)
    await expect_close(refused, CloseCode.BAD_TOKEN)
    text = await hub.metrics()
    assert sample(text, "hub_connects_total") == 2  # the refused one was never accepted
    assert sample(text, "hub_connections") == 2
    await first.close()
    await second.close()
    third = await hub.connect("1")
    assert await hub.metric("hub_connects_total") == 3
    await third.close()


# -------------------------------------------------------------- stalled backends


class Stall:
    """One backend call for one user that hangs until ``release``."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.topic = f"user.{user}"
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def hold(self) -> None:
        self.entered.set()
        await self.gate.wait()

    def release(self) -> None:
        self.gate.set()

    def all_closed(self, subscriptions: list[Tracked]) -> bool:
        """True when the user made at least one subscription and every one of them is closed."""
        mine = [s for s in subscriptions if self.topic in s.topics]
        return bool(mine) and all(s.closed for s in mine)


class Tracked:
    """A real subscription that remembers whether it was closed."""

    def __init__(self, inner: Subscription, topics: Sequence[str], log: list[Tracked]) -> None:
        self.inner = inner
        self.topics = tuple(topics)
        self.closed = False
        log.append(self)

    async def receive(self, direct: Direct | None = None) -> Sequence[Notification]:
        return await self.inner.receive(direct)

    def ack(self) -> None:
        self.inner.ack()

    async def close(self) -> None:
        self.closed = True
        await self.inner.close()


class Stalling:
    """The real backend, with ``stall`` held on one call (``what``) for one user."""

    def __init__(self, inner: Backend, what: str, stall: Stall) -> None:
        self.inner = inner
        self.what = what
        self.stall = stall
        self.subscriptions: list[Tracked] = []

    # Backend
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def broker(self) -> Stalling:
        return self

    @property
    def history(self) -> Stalling | None:
        return self if self.inner.history is not None else None

    @property
    def presence(self) -> Stalling:
        return self

    @property
    def reads(self) -> Reads | None:
        return self.inner.reads

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def check(self) -> dict[str, str | None]:
        return await self.inner.check()

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    # Broker
    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> Receipt:
        return await self.inner.broker.publish(topic, data, message_id=message_id, ttl=ttl, priority=priority)

    async def subscribe(self, topics: Sequence[str]) -> Subscription:
        if self.what == "subscribe" and self.stall.topic in topics:
            await self.stall.hold()
        return Tracked(await self.inner.broker.subscribe(topics), topics, self.subscriptions)

    # History
    async def append(self, topic: str, id: str, ts: int, data: Any) -> tuple[str, bool]:
        assert self.inner.history is not None
        return await self.inner.history.append(topic, id, ts, data)

    async def latest(self, topics: Sequence[str]) -> dict[str, str]:
        assert self.inner.history is not None
        if self.what == "history" and self.stall.topic in topics:
            await self.stall.hold()
        return await self.inner.history.latest(topics)

    async def read(self, after: Mapping[str, str]) -> dict[str, HistoryRead]:
        assert self.inner.history is not None
        return await self.inner.history.read(after)

    # Presence
    async def add(self, conn: Connection) -> int:
        if self.what == "presence" and conn.user == self.stall.user:
            await self.stall.hold()
        return await self.inner.presence.add(conn)

    async def remove(self, conn: Connection) -> int:
        return await self.inner.presence.remove(conn)

    async def count(self, users: Sequence[str]) -> dict[str, int]:
        return await self.inner.presence.count(users)


@contextlib.asynccontextmanager
async def hub_over(backend: str, wrap: Callable[[Backend], Backend], **overrides: Any) -> AsyncIterator[RunningHub]:
    """A replica like ``run_hub``'s, on ``wrap(the real backend)``."""
    async with BACKENDS[backend]() as backend_env:
        environ = {"HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY, **backend_env}
        port = free_port()
        settings = Settings.from_env(environ, port=port, **overrides)
        node = Node(settings, backend=wrap(create_backend(settings)))
        server = build_server(node)
        task = asyncio.create_task(server.serve())
        try:
            await wait_for(lambda: server.started or task.done(), what="the hub to start")
            assert not task.done(), "the hub stopped during start-up"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                yield RunningHub(settings, node, port, backend, http)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)


@pytest.mark.parametrize(
    ("what", "reason"),
    [("presence", "presence did not answer within 0.5 s"), ("subscribe", "the broker did not answer within 0.5 s")],
)
async def test_a_stalled_connect_is_1013_and_leaves_nothing(backend_name: str, what: str, reason: str) -> None:
    stall = Stall("stuck")
    wrapped: list[Stalling] = []

    def wrap(backend: Backend) -> Backend:
        wrapped.append(Stalling(backend, what, stall))
        return wrapped[0]

    async with hub_over(backend_name, wrap, backend_timeout=0.5) as hub:
        client = await hub.connect("stuck", expect_connected=False)
        await stall.entered.wait()
        await still_serves(hub)  # others connect and receive while one connect is stuck
        assert reason in await expect_close(client, CloseCode.TRY_AGAIN_LATER)
        stall.release()  # the stalled call completes after all: whatever it made is undone
        await wait_for(lambda: stall.all_closed(wrapped[0].subscriptions), what="the subscription closed")
        presence = await hub.api("GET", "/api/presence/stuck")
        assert presence.json()["connections"] == 0
        assert not hub.node.sessions
        text = await hub.metrics()
        assert sample(text, "hub_connections") == 0
        assert sample(text, 'hub_closes_total{code="1011"}') == 0
        again = await hub.connect("stuck")  # once the peer answers again, so does the hub
        await again.close()


@pytest.mark.parametrize("backend", sorted(WITH_HISTORY))
async def test_a_stalled_history_read_is_1013_and_leaves_nothing(backend: str) -> None:
    stall = Stall("stuck")
    wrapped: list[Stalling] = []

    def wrap(real: Backend) -> Backend:
        wrapped.append(Stalling(real, "history", stall))
        return wrapped[0]

    async with hub_over(backend, wrap, backend_timeout=0.5) as hub:
        client = await hub.connect("stuck", expect_connected=False)
        await stall.entered.wait()
        assert "history did not answer within 0.5 s" in await expect_close(client, CloseCode.TRY_AGAIN_LATER)
        stall.release()
        assert stall.all_closed(wrapped[0].subscriptions)  # closed before the close frame was sent
        presence = await hub.api("GET", "/api/presence/stuck")
        assert presence.json()["connections"] == 0
        await still_serves(hub)
