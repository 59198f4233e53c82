"""Read state (docs/protocol.md §9) on every backend: the ``read`` frame, ``connected.unread``,
the HTTP read API, isolation between users and retention.

On the distributed backend the second tab of a user runs on a second replica of the same
deployment, so a ``read`` reaches it only over RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from hub.backends.base import ReadEntry, Reads, ReadState
from hub.codes import CloseCode
from hub.protocol import MAX_READ_OFFSETS
from tests.harness import Client, RunningHub, run_hub

pytestmark = pytest.mark.contract


@contextlib.asynccontextmanager
async def other_replica(hub: RunningHub) -> AsyncIterator[RunningHub]:
    """A second replica of ``hub``'s deployment (distributed), or ``hub`` itself (embedded)."""
    s = hub.settings
    if s.amqp_url is None:
        yield hub
        return
    env = {
        "HUB_EXCHANGE": s.exchange,
        "HUB_LIVE_EXCHANGE": s.live_exchange,
        "HUB_INGEST_QUEUE": s.ingest_queue,
        "HUB_DEAD_LETTER": s.dead_letter,
        "HUB_PRESENCE_EXCHANGE": s.presence_exchange,
        "HUB_REDIS_PREFIX": s.redis_prefix,
    }
    async with run_hub(hub.backend, env=env, replica_id="second") as second:
        yield second


async def next_of(client: Client, kind: str) -> dict[str, Any]:
    """The next frame, which must be of ``kind``."""
    frame = await client.recv()
    assert frame["type"] == kind, f"expected a {kind} frame, got {frame}"
    return frame


async def published(hub: RunningHub, tabs: list[Client], count: int, user: str = "42") -> list[str]:
    """Publish ``count`` notifications to ``user``; every tab receives them; their offsets."""
    offsets = [(await hub.publish(user, {"n": n}))["offset"] for n in range(count)]
    for tab in tabs:
        frames = await tab.notifications(count)
        offsets = [f["offset"] for f in frames]
    return offsets


async def test_connected_carries_unread_counts(history_hub: RunningHub) -> None:
    hub = history_hub
    first = await hub.connect("42")
    assert first.connected["unread"] == {"user.42": 0}
    await published(hub, [first], 3)
    again = await hub.connect("42")
    assert again.connected["unread"] == {"user.42": 3}
    await first.close()
    await again.close()


async def test_without_history_nothing_changes(nohistory_hub: RunningHub) -> None:
    client = await nohistory_hub.connect("42")
    assert "unread" not in client.connected
    await client.send({"type": "read", "topic": "user.42", "up_to": "1-0"})
    closed = await client.closed()
    assert closed.code == CloseCode.PROTOCOL_ERROR
    assert "history is off" in closed.reason
    response = await nohistory_hub.api("GET", "/api/unread?user=42")
    assert response.status_code == 404


async def test_read_in_one_tab_reaches_the_other_on_another_replica(history_hub: RunningHub) -> None:
    hub = history_hub
    async with other_replica(hub) as second:
        laptop = await hub.connect("42")
        phone = await second.connect("42")
        o = await published(hub, [laptop, phone], 3)
        await laptop.send({"type": "read", "topic": "user.42", "up_to": o[1]})
        expected = {"type": "read", "topic": "user.42", "up_to": o[1], "offsets": [], "unread": 1}
        assert await next_of(phone, "read") == expected
        assert await next_of(laptop, "read") == expected  # the sender hears it too
        await phone.send({"type": "read", "topic": "user.42", "offsets": [o[2]]})
        expected = {"type": "read", "topic": "user.42", "up_to": o[1], "offsets": [o[2]], "unread": 0}
        assert await next_of(laptop, "read") == expected
        assert await next_of(phone, "read") == expected
        await laptop.close()
        await phone.close()


async def test_marks_fold_into_the_cursor_and_counts_survive_reconnect(history_hub: RunningHub) -> None:
    hub = history_hub
    tab = await hub.connect("42")
    o = await published(hub, [tab], 5)
    await tab.send({"type": "read", "topic": "user.42", "offsets": [o[1], o[3]]})
    frame = await next_of(tab, "read")
    assert (frame["up_to"], frame["offsets"], frame["unread"]) == ("0-0", [o[1], o[3]], 3)
    await tab.send({"type": "read", "topic": "user.42", "up_to": o[2]})
    frame = await next_of(tab, "read")
    assert (frame["up_to"], frame["offsets"], frame["unread"]) == (o[2], [o[3]], 1)
    await tab.send({"type": "read", "topic": "user.42", "up_to": o[0]})  # never backwards
    frame = await next_of(tab, "read")
    assert (frame["up_to"], frame["unread"]) == (o[2], 1)
    offsets = tab.connected["offsets"]
    await tab.close()
    await hub.publish("42", {"n": "while away"})
    back = await hub.connect("42", since=offsets)  # recovery: 5 replayed + 1 missed
    assert back.connected["unread"] == {"user.42": 2}
    assert len(await back.notifications(6)) == 6
    await back.close()


async def test_up_to_past_the_newest_is_clamped_and_unknown_offsets_ignored(history_hub: RunningHub) -> None:
    hub = history_hub
    tab = await hub.connect("42")
    o = await published(hub, [tab], 2)
    ms = int(o[1].split("-")[0])
    await tab.send({"type": "read", "topic": "user.42", "offsets": [f"{ms}-99", "1-0", o[1]]})
    frame = await next_of(tab, "read")
    assert (frame["up_to"], frame["offsets"], frame["unread"]) == ("0-0", [o[1]], 1)
    await tab.send({"type": "read", "topic": "user.42", "up_to": f"{ms + 10**9}-0"})
    frame = await next_of(tab, "read")
    assert (frame["up_to"], frame["offsets"], frame["unread"]) == (o[1], [], 0)
    await hub.publish("42", {"n": "new"})  # published after: unread, whatever up_to said
    await tab.notifications(1)
    answer = await hub.api("GET", "/api/unread?user=42")
    assert answer.json() == {"users": {"42": {"user.42": 1}}}
    await tab.close()


async def test_marks_past_retention_are_dropped(history_backend: str) -> None:
    async with run_hub(history_backend, history_size=3) as hub:
        tab = await hub.connect("42")
        o = await published(hub, [tab], 3)
        await tab.send({"type": "read", "topic": "user.42", "offsets": [o[0], o[2]]})
        assert (await next_of(tab, "read"))["unread"] == 1
        await published(hub, [tab], 2)  # o[0] and o[1] leave the history
        await tab.send({"type": "read", "topic": "user.42", "offsets": [o[0]]})  # gone: ignored
        frame = await next_of(tab, "read")
        assert (frame["offsets"], frame["unread"]) == ([o[2]], 2)
        answer = await hub.api("GET", "/api/notifications/42")
        flags = [(n["offset"], n["read"]) for n in answer.json()["notifications"]]
        assert [f for f in flags if f[0] in o] == [(o[2], True)]
        assert len(flags) == 3
        await tab.close()


async def test_another_users_read_state_is_untouched_and_unreachable(history_hub: RunningHub) -> None:
    hub = history_hub
    alice = await hub.connect("alice")
    # bob may read alice's topic (granted), yet never sees or changes alice's read state
    bob = await hub.connect("bob", token=hub.token("bob", topics=["user.alice"]))
    o = await published(hub, [alice, bob], 2, user="alice")
    await alice.send({"type": "read", "topic": "user.alice", "up_to": o[0]})
    assert (await next_of(alice, "read"))["unread"] == 1
    await bob.expect_silence()
    await bob.send({"type": "read", "topic": "user.alice", "up_to": o[1]})  # bob's own state
    assert (await next_of(bob, "read"))["unread"] == 0
    await alice.expect_silence()
    counts = (await hub.api("GET", "/api/unread?user=alice,bob&topic=user.alice")).json()
    assert counts == {"users": {"alice": {"user.alice": 1}, "bob": {"user.alice": 0}}}
    await bob.send({"type": "read", "topic": "user.carol", "up_to": o[1]})  # not granted: 4003
    closed = await bob.closed()
    assert closed.code == CloseCode.FORBIDDEN
    await alice.close()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"type": "read", "topic": "user.42", "offsets": ["1-0"] * (MAX_READ_OFFSETS + 1)}, "at most 100"),
        ({"type": "read", "topic": "user.42", "offsets": ["nope"]}, "offset"),
        ({"type": "read", "topic": "user.42", "up_to": "1-0-0"}, "offset"),
        ({"type": "read", "topic": "user.42", "offsets": "1-0"}, "list"),
        ({"type": "read", "topic": "user.42"}, "expected 'up_to' or"),
        ({"type": "read", "topic": "user.*", "up_to": "1-0"}, "topic"),
    ],
)
async def test_bad_read_frames_are_4002(history_hub: RunningHub, frame: dict[str, Any], reason: str) -> None:
    client = await history_hub.connect("42")
    await client.send(frame)
    closed = await client.closed()
    assert closed.code == CloseCode.PROTOCOL_ERROR
    assert reason in closed.reason


async def test_http_page_and_mark(history_hub: RunningHub) -> None:
    hub = history_hub
    tab = await hub.connect("42")
    o = await published(hub, [tab], 5)
    answer = await hub.api("POST", "/api/read", json={"user": "42", "up_to": o[1], "offsets": [o[3]]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"user": "42", "topic": "user.42", "up_to": o[1], "offsets": [o[3]], "unread": 2}
    assert (await next_of(tab, "read"))["unread"] == 2  # sockets hear HTTP marks too
    first = (await hub.api("GET", "/api/notifications/42?limit=3")).json()
    assert [(n["offset"], n["read"]) for n in first["notifications"]] == [(o[4], False), (o[3], True), (o[2], False)]
    assert first["next"] == o[2]
    rest = (await hub.api("GET", f"/api/notifications/42?limit=3&before={first['next']}")).json()
    assert [(n["offset"], n["read"]) for n in rest["notifications"]] == [(o[1], True), (o[0], True)]
    assert rest["next"] is None
    assert rest["notifications"][0]["data"] == {"n": 1}
    for method, path, body in [
        ("POST", "/api/read", {"user": "4.2", "up_to": o[0]}),
        ("POST", "/api/read", {"user": "42"}),
        ("POST", "/api/read", {"user": "42", "offsets": ["x"]}),
        ("POST", "/api/read", {"user": "42", "offsets": [o[0]] * (MAX_READ_OFFSETS + 1)}),
        ("GET", "/api/notifications/42?limit=0", None),
        ("GET", "/api/notifications/42?before=zz", None),
        ("GET", "/api/unread", None),
    ]:
        response = await hub.api(method, path, json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert "error" in response.json()
    unauthorized = await hub.api("GET", "/api/unread?user=42", headers={"Authorization": "Bearer wrong"})
    assert unauthorized.status_code == 401
    await tab.close()


class StalledReads:
    """A ``Reads`` whose ``mark`` never answers (a sick Redis); the rest is the real store's."""

    def __init__(self, real: Reads) -> None:
        self.real = real
        self.entered = asyncio.Event()

    async def unread(self, user: str, topics: Sequence[str]) -> dict[str, int]:
        return await self.real.unread(user, topics)

    async def mark(self, user: str, topic: str, *, up_to: str | None, offsets: Sequence[str]) -> ReadState:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def page(self, user: str, topic: str, *, before: str | None, limit: int) -> list[ReadEntry]:
        return await self.real.page(user, topic, before=before, limit=limit)


# Not on ``clustered``: a hub on a 3-node RabbitMQ cluster does not start within a 0.5 s
# backend deadline (its start-up steps are each bounded by it); the read path is the same code.
@pytest.mark.parametrize("backend", ["memory", "distributed"])
async def test_a_stalled_read_store_is_1013_quickly_and_the_hub_serves_on(backend: str) -> None:
    async with run_hub(backend, backend_timeout=0.5) as hub:
        backend = hub.node.backend
        real = backend.reads
        assert real is not None
        stalled = StalledReads(real)
        backend._reads = stalled  # type: ignore[attr-defined]  # both backends keep their store there
        tab = await hub.connect("42")
        other = await hub.connect("43")
        await tab.send({"type": "read", "topic": "user.42", "up_to": "1-0"})
        closed = await tab.closed()
        assert closed.code == CloseCode.TRY_AGAIN_LATER
        assert "read state did not answer within 0.5 s" in closed.reason
        assert stalled.entered.is_set()
        await hub.publish("43", {"still": "served"})
        [frame] = await other.notifications(1)
        assert frame["data"] == {"still": "served"}
        await other.close()


async def test_http_unread_for_many_users(history_hub: RunningHub) -> None:
    hub = history_hub
    tab = await hub.connect("u57")
    await published(hub, [tab], 2, user="u57")
    users = [f"u{n}" for n in range(100)]
    answer = await hub.api("GET", "/api/unread", params={"user": ",".join(users)})
    assert answer.status_code == 200, answer.text
    counts = answer.json()["users"]
    assert list(counts) == users
    assert {u: c[f"user.{u}"] for u, c in counts.items() if c[f"user.{u}"]} == {"u57": 2}
    too_many = await hub.api("GET", "/api/unread", params={"user": ",".join(f"u{n}" for n in range(1001))})
    assert too_many.status_code == 400
    await tab.close()
