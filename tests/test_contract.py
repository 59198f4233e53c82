"""The behaviour contract of protocol v1 (docs/protocol.md §3, §5), run against every backend.

Each test talks to a real uvicorn server with a real WebSocket client. Backends
register themselves in ``testkit.hubs.BACKENDS``; recovery tests run on those that
keep history, history-off tests on those that don't.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.harness import RunningHub, make_token, wait_for

pytestmark = pytest.mark.contract


async def test_connected_frame(hub: RunningHub) -> None:
    client = await hub.connect("42")
    frame = client.connected
    assert frame["user"] == "42"
    assert frame["topics"] == ["user.42"]
    assert frame["replica"] == hub.settings.replica_id
    assert frame["ping_interval"] == hub.settings.ping_interval
    assert frame["recovered"] is True
    assert isinstance(frame["conn_id"], str)
    assert frame["conn_id"]
    if hub.history:
        assert set(frame["offsets"]) == {"user.42"}
    await client.close()


async def test_receives_published_notification(hub: RunningHub) -> None:
    client = await hub.connect("42")
    answer = await hub.publish("42", {"text": "hi"})
    [frame] = await client.notifications(1)
    assert frame["id"] == answer["id"]
    assert frame["topic"] == "user.42"
    assert frame["data"] == {"text": "hi"}
    assert isinstance(frame["ts"], int)
    assert ("offset" in frame) == hub.history
    await client.close()


async def test_msgpack_subprotocol(hub: RunningHub) -> None:
    client = await hub.connect("42", msgpack_protocol=True)
    assert client.ws.subprotocol == "hub.v1.msgpack"
    await hub.publish("42", {"n": 1, "list": [1, 2]})
    [frame] = await client.notifications(1)
    assert frame["data"] == {"n": 1, "list": [1, 2]}
    await client.close()


async def test_json_is_the_default_without_subprotocol(hub: RunningHub) -> None:
    ws = await hub.open(None)
    assert ws.subprotocol is None
    await ws.send(f'{{"type": "connect", "token": "{make_token("42")}"}}')
    assert '"connected"' in str(await ws.recv())
    await ws.close()


async def test_every_tab_of_a_user_receives_in_order(hub: RunningHub) -> None:
    tabs = [await hub.connect("42") for _ in range(3)]
    ids = [(await hub.publish("42", {"n": i}))["id"] for i in range(20)]
    for tab in tabs:
        frames = await tab.notifications(20)
        assert [f["id"] for f in frames] == ids
        assert [f["data"]["n"] for f in frames] == list(range(20))
        await tab.close()


async def test_user_never_receives_another_users_notifications(hub: RunningHub) -> None:
    alice = await hub.connect("alice")
    bob = await hub.connect("bob")
    await hub.publish("bob", {"for": "bob"})
    await hub.publish("alice", {"for": "alice"})
    [frame] = await alice.notifications(1)
    assert frame["data"] == {"for": "alice"}
    await alice.expect_silence()
    [frame] = await bob.notifications(1)
    assert frame["data"] == {"for": "bob"}
    await alice.close()
    await bob.close()


async def test_granted_topics(hub: RunningHub) -> None:
    client = await hub.connect(token=make_token("42", topics=["broadcast", "team.7"]))
    assert client.connected["topics"] == ["user.42", "broadcast", "team.7"]
    await hub.publish(topic="team.7", data="hello team")
    await hub.publish(topic="team.8", data="not for us")
    await hub.publish(topic="broadcast", data="all")
    frames = await client.notifications(2)
    assert [(f["topic"], f["data"]) for f in frames] == [("team.7", "hello team"), ("broadcast", "all")]
    await client.expect_silence()
    await client.close()


async def test_message_id_is_delivered_once(history_hub: RunningHub) -> None:
    hub = history_hub  # de-duplication is by the id in the topic's history
    client = await hub.connect("42")
    first = await hub.publish("42", "once", id="order-17")
    await hub.publish("42", "once", id="order-17")
    await hub.publish("42", "after")
    frames = await client.notifications(2)
    assert [f["data"] for f in frames] == ["once", "after"]
    assert frames[0]["id"] == first["id"] == "order-17"
    await client.expect_silence()
    await client.close()


async def test_presence_counts_sockets(hub: RunningHub) -> None:
    async def count() -> int:
        body = (await hub.api("GET", "/api/presence/77")).json()
        assert body["online"] == (body["connections"] > 0)
        return int(body["connections"])

    assert await count() == 0
    a = await hub.connect("77")
    b = await hub.connect("77")
    await wait_for(lambda: _equals(count(), 2), what="two connections")
    await a.close()
    await wait_for(lambda: _equals(count(), 1), what="one connection")
    await b.close()
    await wait_for(lambda: _equals(count(), 0), what="offline")


async def _equals(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


# --------------------------------------------------------------------- recovery


async def test_reconnect_with_since_recovers_without_gap_or_duplicate(history_hub: RunningHub) -> None:
    hub = history_hub
    client = await hub.connect("42")
    for i in range(5):
        await hub.publish("42", i)
    frames = await client.notifications(5)
    last = frames[2]["offset"]  # the tab saw only three before it dropped
    await client.close()
    for i in range(5, 10):
        await hub.publish("42", i)
    again = await hub.connect("42", since={"user.42": last})
    assert again.connected["recovered"] is True
    await hub.publish("42", 10)
    frames = await again.notifications(8)
    assert [f["data"] for f in frames] == list(range(3, 11))
    offsets = [tuple(map(int, f["offset"].split("-"))) for f in frames]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == len(offsets)
    await again.expect_silence()
    await again.close()


async def test_connected_offsets_are_a_resume_point(history_hub: RunningHub) -> None:
    hub = history_hub
    await hub.publish("42", "before")
    client = await hub.connect("42")
    offsets = client.connected["offsets"]
    await client.expect_silence()  # no since: only new notifications
    await client.close()
    await hub.publish("42", "while away")
    again = await hub.connect("42", since=offsets)
    [frame] = await again.notifications(1)
    assert frame["data"] == "while away"
    assert again.connected["recovered"] is True
    await again.close()


async def test_offline_notifications_wait_in_history(history_hub: RunningHub) -> None:
    hub = history_hub
    resume = await _resume_point(hub, "9")
    for i in range(3):
        await hub.publish("9", i)
    client = await hub.connect("9", since=resume)
    assert [f["data"] for f in await client.notifications(3)] == [0, 1, 2]
    assert client.connected["offsets"] == await _resume_point(hub, "9")
    await client.close()


async def _resume_point(hub: RunningHub, user: str) -> dict[str, str]:
    """The ``offsets`` a new connection of ``user`` gets (it connects and leaves)."""
    probe = await hub.connect(user)
    offsets: dict[str, str] = probe.connected["offsets"]
    await probe.close()
    return offsets


async def test_since_older_than_retention_says_not_recovered(history_hub: RunningHub) -> None:
    from tests.harness import run_hub

    async with run_hub(history_hub.backend, history_size=3) as hub:
        client = await hub.connect("5")
        await hub.publish("5", "first")
        [first] = await client.notifications(1)
        await client.close()
        for i in range(6):
            await hub.publish("5", i)
        again = await hub.connect("5", since={"user.5": first["offset"]})
        assert again.connected["recovered"] is False
        assert [f["data"] for f in await again.notifications(3)] == [3, 4, 5]
        await again.close()


async def test_since_within_retention_after_trimming_is_recovered(history_hub: RunningHub) -> None:
    from tests.harness import run_hub

    async with run_hub(history_hub.backend, history_size=3) as hub:
        client = await hub.connect("5")
        for i in range(5):
            await hub.publish("5", i)
        frames = await client.notifications(5)
        await client.close()
        await hub.publish("5", 5)
        again = await hub.connect("5", since={"user.5": frames[-1]["offset"]})
        assert again.connected["recovered"] is True
        assert [f["data"] for f in await again.notifications(1)] == [5]
        await again.close()


async def test_no_history_frames_have_no_offset_and_since_is_not_recovered(nohistory_hub: RunningHub) -> None:
    hub = nohistory_hub  # HUB_HISTORY_SIZE=0 backends only; the ones with history are covered above
    assert not hub.history
    client = await hub.connect("42", since={"user.42": "1-0"})
    assert client.connected["recovered"] is False
    assert client.connected["offsets"] == {}
    await hub.publish("42", "x")
    [frame] = await client.notifications(1)
    assert "offset" not in frame
    await client.close()


async def test_many_reconnects_deliver_everything_exactly_once(history_hub: RunningHub) -> None:
    hub = history_hub
    client = await hub.connect("31")
    since = client.connected["offsets"]
    received: list[int] = []
    published = 0
    for _round in range(5):
        for _ in range(7):
            await hub.publish("31", published)
            published += 1
        frames = await client.notifications(3)  # read a few, then the network "drops"
        received += [f["data"] for f in frames]
        since = {"user.31": frames[-1]["offset"]}
        await client.close()
        client = await hub.connect("31", since=since)
        assert client.connected["recovered"] is True
    rest = await client.notifications(published - len(received))
    received += [f["data"] for f in rest]
    assert received == list(range(published))
    await client.expect_silence()
    await client.close()


async def test_concurrent_publishing_during_connect_loses_nothing(history_hub: RunningHub) -> None:
    hub = history_hub
    since = await _resume_point(hub, "8")

    async def publisher() -> None:
        for i in range(40):
            await hub.publish("8", i)

    task = asyncio.create_task(publisher())
    await asyncio.sleep(0)  # let the publisher start before the reconnect
    client = await hub.connect("8", since=since)
    await task
    frames = await client.notifications(40)
    assert [f["data"] for f in frames] == list(range(40))
    await client.expect_silence()
    await client.close()
