"""The transport (hub/transport.py): one writer, deadlines, abort — and the client that never reads.

The first half drives a ``Transport`` through the ASGI interface it is given (a peer
whose ``send`` can be held, like a socket whose buffer is full). The second half is
end to end: a real hub, a raw TCP client with a tiny receive buffer that completes the
WebSocket handshake and the ``connect`` frame and then stops reading, while
notifications pour in. The hub must cut it off within a few send deadlines and keep
nothing of it: no TCP connection, no session, no presence, no task.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.frames import Frame, Opcode

from hub.session import Session
from hub.transport import ABORT, PeerGone, Transport
from testkit.metrics import sample
from tests.harness import RunningHub, make_token, run_hub, wait_for

# ------------------------------------------------------------------ a scripted peer


class Peer:
    """The ASGI side of one socket: records what is sent; ``hold()`` makes sends wait."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.aborted = 0
        self.open = asyncio.Event()
        self.open.set()
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.broken = False

    def hold(self) -> None:
        self.open.clear()

    def release(self) -> None:
        self.open.set()

    async def send(self, message: Any) -> None:
        if message == ABORT:
            self.aborted += 1
            return
        if message.pop("hub.nowait", False) and not self.open.is_set():
            raise BlockingIOError("held")  # as the hub's server does: never wait on a nowait send
        await self.open.wait()
        if self.broken:
            raise ConnectionResetError("peer reset")
        if "text" in message:
            message["text"].encode()  # as the server does: a lone surrogate fails here
        self.sent.append(dict(message))

    def send_now(self, message: Any) -> bool:
        """The server's send without waiting (``SendNow``): False while held."""
        if not self.open.is_set():
            return False
        if self.broken:
            raise ConnectionResetError("peer reset")
        self.sent.append(dict(message))
        return True

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]


def writers() -> list[asyncio.Task[Any]]:
    """Live writer tasks of any transport."""
    return [t for t in asyncio.all_tasks() if "_write_all" in repr(t.get_coro())]


async def test_a_socket_that_takes_frames_at_once_is_written_without_a_task() -> None:
    peer = Peer()
    done: list[list[str]] = []
    transport = Transport(peer.receive, peer.send, send_timeout=5)
    await transport.write(["a", "b"], lambda: done.append(peer.texts()))
    assert peer.texts() == ["a", "b"]  # sent before write returned
    assert done == [["a", "b"]]
    assert writers() == []  # no writer task was needed
    assert all("hub.nowait" not in m for m in peer.sent)  # (the peer took the mark off)


async def test_frames_a_full_socket_cannot_take_are_queued_in_order() -> None:
    peer = Peer()
    done: list[int] = []
    transport = Transport(peer.receive, peer.send, send_timeout=5)
    peer.hold()
    await transport.write(["a", "b"], lambda: done.append(transport.backlog))
    await transport.write(["c"])  # behind the queued ones, never before them
    assert transport.backlog == 3
    assert len(writers()) == 1
    peer.release()
    await transport.flush()
    assert peer.texts() == ["a", "b", "c"]
    assert done == [1]  # the callback ran after a and b, before c
    assert transport.backlog == 0
    assert writers() == []  # an idle socket costs no task


async def test_pings_do_not_pile_up_behind_a_stuck_write() -> None:
    peer = Peer()
    transport = Transport(peer.receive, peer.send, send_timeout=5)
    peer.hold()
    await transport.write(["frame"])
    for _ in range(10):
        transport.ping("ping")
        await asyncio.sleep(0)
    assert len(writers()) == 1  # one writer, however many pings were due
    peer.release()
    await transport.flush()
    assert peer.texts() == ["frame", "ping"]
    transport.ping("ping")  # once written, the next one goes out
    await transport.flush()
    assert peer.texts() == ["frame", "ping", "ping"]


async def test_a_write_past_its_deadline_aborts_the_connection() -> None:
    peer = Peer()
    lost: list[bool] = []
    transport = Transport(peer.receive, peer.send, send_timeout=0.2, on_lost=lambda: lost.append(True))
    peer.hold()
    await transport.write(["never taken"])
    with pytest.raises(PeerGone, match=r"within 0\.2 s"):
        await transport.flush()
    assert peer.aborted == 1
    assert lost == [True]
    assert transport.lost
    assert writers() == []
    with pytest.raises(PeerGone):
        await transport.write(["more"])
    transport.ping("ping")  # ignored: nothing is written to a lost peer
    await transport.close(1013, "too slow", "farewell")  # returns at once, quietly
    assert peer.sent == []


async def test_close_drops_what_is_queued_and_goes_after_the_write_in_flight() -> None:
    peer = Peer()
    transport = Transport(peer.receive, peer.send, send_timeout=5)
    acked: list[bool] = []
    peer.hold()
    await transport.write(["in flight", "queued 1", "queued 2"], lambda: acked.append(True))
    await asyncio.sleep(0.05)  # the writer holds "in flight"
    closing = asyncio.create_task(transport.close(1013, "too slow", "farewell"))
    await asyncio.sleep(0.05)
    assert not closing.done()  # it waits for the write in flight
    peer.release()
    await closing
    assert peer.texts() == ["in flight", "farewell"]
    assert peer.sent[-1] == {"type": "websocket.close", "code": 1013, "reason": "too slow"}
    assert acked == []  # the dropped frames' callback never ran (nothing was acked unwritten)
    assert transport.closed
    assert writers() == []


async def test_a_close_to_a_client_that_never_takes_it_is_aborted() -> None:
    peer = Peer()
    transport = Transport(peer.receive, peer.send, send_timeout=0.2)
    peer.hold()
    await transport.write(["stuck"])
    await transport.close(1001, "heard nothing", "farewell")
    assert peer.aborted == 1
    assert transport.lost
    assert not transport.closed
    assert writers() == []


async def test_a_broken_socket_is_peer_gone_without_abort() -> None:
    peer = Peer()
    lost: list[bool] = []
    transport = Transport(peer.receive, peer.send, send_timeout=5, on_lost=lambda: lost.append(True))
    peer.broken = True
    with pytest.raises(PeerGone, match="ConnectionResetError"):
        await transport.write(["x"])  # found at once
    assert lost == [True]
    peer.hold()
    other = Transport(peer.receive, peer.send, send_timeout=5)
    await other.write(["y"])  # queued: found by the writer task
    peer.release()
    with pytest.raises(PeerGone, match="ConnectionResetError"):
        await other.flush()
    assert peer.aborted == 0


async def test_a_frame_the_server_cannot_encode_aborts_instead_of_killing_the_writer() -> None:
    peer = Peer()
    transport = Transport(peer.receive, peer.send, send_timeout=5)
    with pytest.raises(PeerGone, match="send failed"):
        await transport.write(["\ud800"])
    assert peer.aborted == 1
    peer.hold()
    other = Transport(peer.receive, peer.send, send_timeout=5)
    await other.write(["\ud800"])
    peer.release()
    with pytest.raises(PeerGone, match="send failed"):
        await other.flush()
    assert peer.aborted == 2
    assert writers() == []


async def test_receive_maps_the_disconnect_to_peer_gone() -> None:
    peer = Peer()
    transport = Transport(peer.receive, peer.send, send_timeout=5)
    await peer.incoming.put({"type": "websocket.receive", "text": "hello"})
    await peer.incoming.put({"type": "websocket.receive", "bytes": b"\x80"})
    await peer.incoming.put({"type": "websocket.disconnect", "code": 1006})
    assert await transport.receive() == "hello"
    assert await transport.receive() == b"\x80"
    with pytest.raises(PeerGone, match="1006"):
        await transport.receive()


async def test_discard_stops_a_stuck_writer() -> None:
    peer = Peer()
    transport = Transport(peer.receive, peer.send, send_timeout=60)
    peer.hold()
    await transport.write(["stuck", "more"])
    await asyncio.sleep(0.01)
    assert len(writers()) == 1
    await transport.discard()
    assert writers() == []
    assert transport.backlog == 0


# ------------------------------------------------ a frame written at once (write_at_once)


def at_once(peer: Peer, send_timeout: float = 5) -> Transport:
    return Transport(peer.receive, peer.send, send_timeout=send_timeout, send_now=peer.send_now)


async def test_a_frame_written_at_once_is_sent_in_the_callers_task() -> None:
    peer = Peer()
    done: list[list[str]] = []
    transport = at_once(peer)
    assert transport.sends_at_once
    transport.write_at_once("a", lambda: done.append(peer.texts()))  # nothing awaited
    assert peer.texts() == ["a"]
    assert done == [["a"]]
    assert transport.backlog == 0
    assert writers() == []
    assert transport.sends_at_once  # and the next one can go the same way


async def test_a_frame_the_socket_cannot_take_at_once_is_queued_before_later_writes() -> None:
    peer = Peer()
    done: list[int] = []
    transport = at_once(peer)
    peer.hold()
    transport.write_at_once("a", lambda: done.append(len(peer.texts())))
    assert (peer.texts(), transport.backlog, len(writers())) == ([], 1, 1)
    assert not transport.sends_at_once  # something is queued: the next frame must queue behind it
    await transport.write(["b"])
    peer.release()
    await transport.flush()
    assert peer.texts() == ["a", "b"]
    assert done == [1]  # once "a" was sent, before "b"
    assert transport.sends_at_once


async def test_sends_at_once_only_with_the_servers_send_and_nothing_else_going() -> None:
    peer = Peer()
    assert not Transport(peer.receive, peer.send, send_timeout=5).sends_at_once  # no send_now (SSE)
    transport = at_once(peer)
    transport.ping("ping")  # the writer task has it
    assert not transport.sends_at_once
    await transport.flush()
    assert transport.sends_at_once
    await transport.close(1000, "bye", "farewell")
    assert not transport.sends_at_once  # after the close nothing more is sent
    broken = Peer()
    broken.broken = True
    lost = at_once(broken)
    lost.write_at_once("x", lambda: None)
    assert not lost.sends_at_once


async def test_a_broken_socket_found_at_once_is_raised_by_the_next_write() -> None:
    peer = Peer()
    gone: list[str] = []
    transport = Transport(
        peer.receive, peer.send, send_timeout=5, send_now=peer.send_now, on_lost=lambda: gone.append("lost")
    )
    peer.broken = True
    ran: list[str] = []
    transport.write_at_once("a", lambda: ran.append("then"))  # never raises
    assert (transport.lost, gone, ran) == (True, ["lost"], [])
    with pytest.raises(PeerGone):
        await transport.write(["b"])


# --------------------------------------------------------- the client that never reads


class RawClient:
    """A WebSocket client on a plain socket with a tiny receive buffer that it does not read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]

    @classmethod
    async def connect(cls, port: int, token: str) -> RawClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: hub.v1.json\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        response = b""
        while b"\r\n\r\n" not in response:  # read the 101 byte by byte: nothing after it is consumed
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), 10)
            assert chunk, f"the hub closed during the handshake: {response!r}"
            response += chunk
        assert response.startswith(b"HTTP/1.1 101"), response
        client = cls(sock)
        await client.send({"type": "connect", "token": token})
        return client

    async def send(self, frame: dict[str, Any]) -> None:
        data = Frame(Opcode.TEXT, json.dumps(frame).encode()).serialize(mask=True, extensions=[])
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def read_some(self, size: int) -> bytes:
        return await asyncio.get_running_loop().sock_recv(self.sock, size)

    async def ends(self) -> str:
        """Read what is left until the hub's reset or EOF; say which (fails after 30 s)."""
        try:
            async with asyncio.timeout(30):
                while await self.read_some(65536):
                    pass
        except ConnectionResetError:
            return "reset"
        return "eof"

    def close(self) -> None:
        self.sock.close()


def server_side_open(hub_port: int, client_port: int) -> bool:
    """True while the kernel has a TCP socket from the hub's port to ``client_port`` (any state
    but TIME_WAIT: /proc/net/tcp, no tools needed)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote, state = fields[1], fields[2], fields[3]
                ports = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
                if ports == (hub_port, client_port) and state != "06":  # TIME_WAIT holds nothing
                    return True
    return False


def users_with_sessions(hub: RunningHub) -> list[str]:
    """The users of the hub's registered sessions, sorted."""
    return sorted(s.claims.user for s in hub.node.sessions if isinstance(s, Session) and s.claims is not None)


def session_tasks() -> set[asyncio.Task[Any]]:
    """Tasks that belong to some WebSocket connection (its ASGI task, reader or writer)."""
    names = ("Session.", "Transport.", "Delivery.", "run_asgi")
    return {t for t in asyncio.all_tasks() if any(n in repr(t.get_coro()) for n in names)}


@contextlib.asynccontextmanager
async def flooding(hub: RunningHub, user: str, count: int) -> AsyncIterator[asyncio.Task[int]]:
    """Publish ``count`` notifications of 60 KB to ``user`` in the background; yields the task."""

    async def publish() -> int:
        pad = "x" * 60_000
        for i in range(count):
            await hub.publish(user, {"i": i, "pad": pad})
        return count

    task = asyncio.create_task(publish())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def assert_nothing_remains(hub: RunningHub, user: str, client: RawClient, before: set[asyncio.Task[Any]]) -> None:
    """No TCP connection, session, presence entry or task of ``client`` is left (``before``:
    the connection tasks that existed before it came, the witness's)."""
    await wait_for(lambda: not server_side_open(hub.port, client.port), timeout=30, what="the TCP connection to go")
    await wait_for(
        lambda: user not in users_with_sessions(hub), timeout=30, what=f"the session of {user} to be unregistered"
    )
    assert users_with_sessions(hub) == ["witness"], "the witness's session must outlive the stuck client"
    await wait_for(lambda: session_tasks() <= before, timeout=30, what="the connection's tasks to end")
    presence = await hub.api("GET", f"/api/presence/{user}")
    assert presence.json()["connections"] == 0, presence.json()
    metrics = await hub.metrics()
    assert sample(metrics, "hub_connections") == 1  # the witness only
    assert sample(metrics, "hub_connects_total") == 2


async def expect_witness_served(hub: RunningHub, listening: asyncio.Task[list[dict[str, Any]]], value: int) -> None:
    """The witness (another user, reading all along, so answering pings) still gets its notification."""
    await hub.publish("witness", value)
    frames = await listening
    assert frames[0]["data"] == value


NON_READING_BACKENDS = ["memory", "distributed"]

#: A silence watchdog of 1 s (two intervals). The witness shares this process's event loop
#: with the hub, the publisher and the stuck client: one stall of the loop on a loaded CI
#: box once ended it with 1001, because the hub counted its own stall as the witness's
#: silence; it no longer does (hub/liveness.py; reproduced with a 1.5 s ``time.sleep``).
PING_INTERVAL = 0.5


@dataclass
class Scene:
    """A stuck client among well-behaved ones: ``listening`` is a witness reading all along."""

    client: RawClient
    listening: asyncio.Task[list[dict[str, Any]]]
    before: set[asyncio.Task[Any]]


@contextlib.asynccontextmanager
async def scene(hub: RunningHub, user: str, flood: int) -> AsyncIterator[Scene]:
    """A witness, then ``user``'s raw client; once its session is open, ``flood`` notifications
    of 60 KB are published to it in the background."""
    witness = await hub.connect("witness")
    listening = asyncio.create_task(witness.notifications(1, timeout=90))
    before = session_tasks()
    client = await RawClient.connect(hub.port, make_token(user))
    try:
        await wait_for(lambda: len(hub.node.sessions) == 2, what=f"the session of {user}")
        async with flooding(hub, user, flood):
            yield Scene(client, listening, before)
    finally:
        listening.cancel()
        with contextlib.suppress(BaseException):
            await listening
        client.close()
        await witness.close()


@pytest.mark.parametrize("backend", NON_READING_BACKENDS)
async def test_a_client_that_never_reads_is_aborted(backend: str) -> None:
    """Never reads, never answers: the silence watchdog or the send deadline ends it; the
    1001 it is owed cannot get through a full buffer, so the connection is reset."""
    async with run_hub(backend, ping_interval=PING_INTERVAL, send_timeout=1) as hub, scene(hub, "mute", 120) as it:
        assert await it.client.ends() == "reset"
        await assert_nothing_remains(hub, "mute", it.client, it.before)
        await expect_witness_served(hub, it.listening, 1)


@pytest.mark.parametrize("backend", NON_READING_BACKENDS)
async def test_a_client_that_talks_but_hardly_reads_is_aborted(backend: str) -> None:
    """The honest "answers pings" case: a client whose pings could only be answered after it
    read megabytes can't answer them in time, so this one keeps the silence watchdog happy
    the only way a stuck reader can (an unsolicited ``pong`` every 0.2 s, which the hub
    counts as hearing from it) and reads 512 bytes every 0.1 s. The watchdog never fires
    (no 1001): the send deadline alone must cut it off."""
    async with run_hub(backend, ping_interval=PING_INTERVAL, send_timeout=1) as hub, scene(hub, "slow", 120) as it:
        client = it.client
        outcome: list[str] = []

        async def talk_and_sip() -> None:
            try:
                while True:
                    await client.send({"type": "pong"})
                    for _ in range(2):
                        if not await client.read_some(512):
                            outcome.append("eof")
                            return
                        await asyncio.sleep(0.1)
            except (ConnectionResetError, BrokenPipeError):
                outcome.append("reset")

        await asyncio.wait_for(talk_and_sip(), 60)
        assert outcome == ["reset"]
        await assert_nothing_remains(hub, "slow", client, it.before)
        metrics = await hub.metrics()
        assert sample(metrics, 'hub_closes_total{code="1001"}') == 0  # it was heard all along
        await expect_witness_served(hub, it.listening, 2)


@pytest.mark.parametrize("backend", NON_READING_BACKENDS)
async def test_an_overflow_is_noticed_while_a_write_is_stuck(backend: str) -> None:
    """The socket's queue bound (50 notifications of 60 KB: more than the TCP buffers take)
    is passed while the writer waits on the full socket: 1013 is decided then, not after
    the write's deadline (before the split the pump was the writer and never saw it)."""
    settings = {"ping_interval": 30, "send_timeout": 5, "socket_queue_size": 50}
    async with run_hub(backend, **settings) as hub, scene(hub, "behind", 200) as it:

        async def closed_for_overflow() -> bool:
            text = await hub.metrics()
            overflows = sample(text, "hub_socket_overflows_total")
            return overflows >= 1 and sample(text, 'hub_closes_total{code="1013"}') == overflows

        await wait_for(closed_for_overflow, timeout=30, what="the overflow to be noticed and closed with 1013")
        assert await it.client.ends() == "reset"  # the 1013 could not get through: reset
        await assert_nothing_remains(hub, "behind", it.client, it.before)
        await expect_witness_served(hub, it.listening, 3)
