"""Behaviours docs/protocol.md promises that no other test asserted, on every backend they apply to.

History trimmed by age (§5, ``HUB_HISTORY_TTL``), the close reason cut to 123 bytes
(§8), the 32-topic limit of a token (§8) and the 1013 for a socket that does not read
(§8, ``HUB_SOCKET_QUEUE_SIZE``).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from hub.codes import CloseCode
from testkit import Client, RunningHub, make_token, run_hub, wait_for

pytestmark = pytest.mark.contract

# ------------------------------------------------------------------ history by age

AGE = 3  # HUB_HISTORY_TTL, seconds: long enough that "within the TTL" holds on a busy machine


async def _trimmed_by_age(hub: RunningHub, user: str) -> dict[str, str]:
    """Publish ``first`` and ``old``; return the resume point right after ``first`` once
    ``old`` has aged out, checking on the way that it was retained within the TTL."""
    client = await hub.connect(user)
    await hub.publish(user, "first")
    await hub.publish(user, "old")
    first, _ = await client.notifications(2)
    await client.close()
    since = {f"user.{user}": first["offset"]}
    within = await hub.connect(user, since=since)
    assert within.connected["recovered"] is True
    assert [f["data"] for f in await within.notifications(1)] == ["old"]
    await within.close()

    async def aged_out() -> bool:
        probe = await hub.connect(user, since=since)
        await probe.close()
        return probe.connected["recovered"] is False

    await wait_for(aged_out, timeout=AGE + 30, what=f"'old' to age out of the {AGE} s history")
    return since


async def test_history_is_trimmed_by_age(history_backend: str) -> None:
    """A ``since`` older than ``HUB_HISTORY_TTL`` gets ``recovered: false`` and nothing expired."""
    async with run_hub(history_backend, history_ttl=AGE) as hub:
        since = await _trimmed_by_age(hub, "aged")
        late = await hub.connect("aged", since=since)
        assert late.connected["recovered"] is False
        await late.expect_silence()  # "old" expired: it is not replayed
        await hub.publish("aged", "new")
        assert [f["data"] for f in await late.notifications(1)] == ["new"]
        await late.close()


async def test_history_trimmed_by_age_is_not_recovered_after_a_new_notification(history_backend: str) -> None:
    """After the trim, a new notification does not make the old resume point complete again:
    it still gets ``recovered: false`` (the app must refetch what aged out), and what is retained."""
    async with run_hub(history_backend, history_ttl=AGE) as hub:
        since = await _trimmed_by_age(hub, "idle")
        await hub.publish("idle", "new")
        again = await hub.connect("idle", since=since)
        assert again.connected["recovered"] is False, "'old' aged out unseen: the client must be told"
        assert [f["data"] for f in await again.notifications(1)] == ["new"]
        await again.expect_silence()
        await again.close()


# ------------------------------------------------------------------ the close reason


async def test_close_reason_is_the_message_cut_to_123_bytes_on_a_character_boundary(hub: RunningHub) -> None:
    """§8: the close frame carries the error message cut to 123 bytes (the RFC 6455 limit),
    never in the middle of a UTF-8 character; the ``error`` frame carries all of it."""
    cut_mid_character = 0
    for pad in range(4):  # 4-byte characters at every alignment: some cut falls inside one
        client = Client(await hub.open("hub.v1.json"), binary=False)
        await client.send({"type": "x" * pad + "\U0001f600" * 40})  # the hub echoes what it refuses
        closed = await client.closed()
        assert closed.code == CloseCode.PROTOCOL_ERROR, closed
        assert closed.error is not None
        message: str = closed.error["message"]
        assert len(message.encode()) > 123, f"expected a message longer than a close reason: {message!r}"
        longest = message.encode()[:123].decode("utf-8", errors="ignore")  # the longest prefix that fits
        assert closed.reason == longest
        cut_mid_character += len(longest.encode()) < 123
    assert cut_mid_character > 0, "expected at least one cut to fall inside a character"


# ------------------------------------------------------------------ 32 topics


async def test_a_token_grants_at_most_32_topics(hub: RunningHub) -> None:
    """§8: a ``topics`` claim of at most 32 valid topics is accepted; 33 is 4003."""
    topics = [f"team.{i}" for i in range(32)]
    client = await hub.connect(token=make_token("42", topics=topics))
    assert client.connected["topics"] == ["user.42", *topics]
    await hub.publish(topic=topics[-1], data="to the 32nd")
    [frame] = await client.notifications(1)
    assert (frame["topic"], frame["data"]) == (topics[-1], "to the 32nd")
    await client.close()
    refused = await hub.connect(token=make_token("42", topics=[*topics, "team.32"]), expect_connected=False)
    closed = await refused.closed()
    assert closed.code == CloseCode.FORBIDDEN, closed
    assert closed.error is not None
    assert closed.error["code"] == CloseCode.FORBIDDEN


# ------------------------------------------------------------------ a socket that does not read

QUEUE = 8  # HUB_SOCKET_QUEUE_SIZE
PAD = "x" * 65_536  # per notification


def _unread_capacity() -> int:
    """Bytes the kernel may buffer for one loopback connection: the server's send buffer can
    grow to ``tcp_wmem``'s maximum; the client's receive buffer is pinned small below."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2]) + 2**20
    except (OSError, IndexError, ValueError):
        return 16 * 2**20


async def _read_until_closed(client: Client) -> tuple[list[dict[str, Any]], int | None, dict[str, Any] | None]:
    """Every notification until the close, the close code and the ``error`` frame before it
    (the ``connected`` frame goes to ``client.connected``)."""
    notes: list[dict[str, Any]] = []
    error = None
    try:
        while True:
            frame = await client.recv(timeout=30)
            if frame["type"] == "notification":
                notes.append(frame)
            elif frame["type"] == "error":
                error = frame
            elif frame["type"] == "connected":
                client.connected = frame
    except ConnectionClosed as closed:
        return notes, (closed.rcvd.code if closed.rcvd else None), error


@pytest.mark.parametrize("backend", ["memory", "memory-nohistory"])
async def test_a_socket_that_does_not_read_is_closed_1013_and_catches_up(backend: str) -> None:
    """§8: a socket more than HUB_SOCKET_QUEUE_SIZE notifications behind is closed with 1013
    (embedded backend; tests/test_distributed_faults.py has the RabbitMQ one), while another
    tab of the same user keeps up; with history the client then catches up with ``since``."""
    count = _unread_capacity() // len(PAD) + QUEUE + 10  # more than the kernel and the bound hold
    # send_timeout: the slow client starts reading only once everything is published.
    settings: dict[str, Any] = {"socket_queue_size": QUEUE, "send_timeout": 120, "history_size": count + 10}
    async with run_hub(backend, **settings) as hub:
        reader = await hub.connect("slow")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no autotuning
        sock.connect(("127.0.0.1", hub.port))
        sock.setblocking(False)
        # max_queue=1: the client library stops reading TCP while one frame waits unread.
        slow = Client(await hub.open("hub.v1.json", sock=sock, max_queue=1), binary=False)
        await slow.send({"type": "connect", "token": hub.token("slow")})
        for i in range(count):
            await hub.publish("slow", {"i": i, "pad": PAD})
            [frame] = await reader.notifications(1)  # the reading tab is not held back
            assert frame["data"]["i"] == i
        frames, code, error = await _read_until_closed(slow)
        assert code == CloseCode.TRY_AGAIN_LATER
        assert error is not None
        assert error["code"] == CloseCode.TRY_AGAIN_LATER
        got = [f["data"]["i"] for f in frames]
        assert got == list(range(len(got))), "what the slow socket got is in order, without gaps"
        assert len(got) < count, "it was closed before it got everything"
        if hub.history:
            since = {"user.slow": frames[-1]["offset"]} if frames else slow.connected["offsets"]
            again = await hub.connect("slow", since=since)
            assert again.connected["recovered"] is True
            rest = await again.notifications(count - len(got), timeout=30)
            assert [f["data"]["i"] for f in rest] == list(range(len(got), count))
            await again.close()
        await reader.close()
