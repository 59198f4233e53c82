"""The publish helper's read-state calls (``hubnotify.reads``, ``Publisher.unread`` & co.)
against a real hub (docs/protocol.md §9)."""

from __future__ import annotations

import asyncio

import pytest

from hubnotify import BlockingPublisher, HubReads, Publisher, ReadsError
from tests.harness import API_KEY, RunningHub, run_hub, wait_for

pytestmark = pytest.mark.contract


async def test_hub_reads_unread_page_and_mark(history_hub: RunningHub) -> None:
    hub = history_hub
    tab = await hub.connect("42")
    for n in range(3):
        await hub.publish("42", {"n": n})
    offsets = [f["offset"] for f in await tab.notifications(3)]
    reads = HubReads(hub.http_url, api_key=API_KEY, timeout=10)
    assert await asyncio.to_thread(reads.unread, [42, "43"]) == {"42": {"user.42": 3}, "43": {"user.43": 0}}
    state = await asyncio.to_thread(lambda: reads.mark_read(42, up_to=offsets[0], offsets=[offsets[2]]))
    assert (state["up_to"], state["offsets"], state["unread"]) == (offsets[0], [offsets[2]], 1)
    frame = await tab.recv()
    assert (frame["type"], frame["unread"]) == ("read", 1)
    page = await asyncio.to_thread(lambda: reads.notifications(42, limit=2))
    assert [(n["offset"], n["read"]) for n in page["notifications"]] == [(offsets[2], True), (offsets[1], False)]
    rest = await asyncio.to_thread(lambda: reads.notifications(42, limit=2, before=page["next"]))
    assert [(n["offset"], n["read"]) for n in rest["notifications"]] == [(offsets[0], True)]
    with pytest.raises(ReadsError) as refused:
        await asyncio.to_thread(lambda: reads.mark_read(42))
    assert refused.value.status == 400
    wrong = HubReads(hub.http_url, api_key="wrong", timeout=10)
    with pytest.raises(ReadsError) as unauthorized:
        await asyncio.to_thread(wrong.unread, [42])
    assert unauthorized.value.status == 401
    await tab.close()


async def test_publisher_and_blocking_publisher_read_calls() -> None:
    async with run_hub("distributed") as hub:
        s = hub.settings
        assert s.amqp_url is not None
        async with Publisher(s.amqp_url, exchange=s.exchange, hub_url=hub.http_url, api_key=API_KEY) as publisher:
            await publisher.publish(7, {"hello": 1})

            async def one_unread() -> bool:
                return (await publisher.unread([7]))["7"]["user.7"] == 1

            await wait_for(one_unread, what="the notification sequenced and counted unread")
            page = await publisher.notifications(7)
            [entry] = page["notifications"]
            state = await publisher.mark_read(7, offsets=[entry["offset"]])
            assert state["unread"] == 0
        url = s.amqp_url
        blocking = await asyncio.to_thread(
            lambda: BlockingPublisher(url, exchange=s.exchange, hub_url=hub.http_url, api_key=API_KEY)
        )
        try:
            assert await asyncio.to_thread(blocking.unread, [7, 8]) == {"7": {"user.7": 0}, "8": {"user.8": 0}}
        finally:
            await asyncio.to_thread(blocking.close)
        with pytest.raises(RuntimeError, match="hub_url"):
            await Publisher(url).unread([7])
