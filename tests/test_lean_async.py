"""hub/lean_async.py: asyncio's Event and Queue semantics, and what a socket no longer keeps."""

from __future__ import annotations

import asyncio
import gc

import pytest
from websockets.http11 import Request

from hub.lean_async import LeanEvent, LeanQueue
from hub.server import LeanWebSocketProtocol
from testkit.hubs import run_hub


async def test_an_event_wakes_every_waiter_and_then_returns_at_once() -> None:
    event = LeanEvent()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert await event.wait() is True  # set: no waiting
    event.clear()
    assert not event.is_set()
    late = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    assert not late.done()
    event.set()
    assert await late is True


async def test_a_cancelled_event_waiter_leaves_the_others_waiting() -> None:
    event = LeanEvent()
    cancelled, kept = asyncio.create_task(event.wait()), asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    event.set()
    assert await kept is True


async def test_a_queue_is_fifo_and_get_waits_for_a_put() -> None:
    queue: LeanQueue[int] = LeanQueue()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    for item in (1, 2, 3):
        queue.put_nowait(item)
    assert await getter == 1
    assert (queue.qsize(), queue.empty()) == (2, False)
    assert [await queue.get(), queue.get_nowait()] == [2, 3]
    assert queue.empty()


async def test_a_get_cancelled_after_its_wake_up_passes_the_item_on() -> None:
    """As asyncio.Queue: the item that woke a getter cancelled meanwhile goes to the next one."""
    queue: LeanQueue[str] = LeanQueue()
    first, second = asyncio.create_task(queue.get()), asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("only")  # wakes ``first`` ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 5) == "only"


async def test_an_accepted_socket_keeps_no_handshake_headers() -> None:
    """The upgrade request's headers (about 3 KB) are emptied once the socket is accepted:
    websockets' parser keeps the request object for the socket's life. The socket works."""
    async with run_hub("memory") as hub:
        client = await hub.connect("lean")
        gc.collect()
        protocols = [o for o in gc.get_objects() if isinstance(o, LeanWebSocketProtocol)]
        assert len(protocols) == 1
        (protocol,) = protocols
        kept: tuple[object, object, object] = (protocol.request, protocol.response, protocol.scope["headers"])
        assert kept == (None, None, [])
        assert isinstance(protocol.queue, LeanQueue)
        assert isinstance(protocol.writable, LeanEvent)
        requests = [o for o in gc.get_objects() if isinstance(o, Request) and o is not client.ws.request]
        assert [len(r.headers) for r in requests] == [0]  # the hub's; the client keeps its own
        await hub.publish("lean", {"still": "working"})
        (frame,) = await client.notifications(1)
        assert frame["data"] == {"still": "working"}
        await client.close()
