"""The socket under one session: accept, receive, and the one writer (docs/protocol.md §3, §8).

Every frame the hub sends on a WebSocket goes through ``Transport``: notifications, the
``connected`` frame, pings, the ``error`` frame and the close. They wait in one outbox,
in order, and one writer task writes them: a ping cannot race a frame, pings cannot
pile up behind a stuck write (one at most is pending), and a close comes after what is
being written and instead of what is still queued. The writer task exists only while
the outbox holds something, so an idle socket costs no task.

Every write has a deadline (``send_timeout``). A write that cannot finish (a client that
stopped reading: its TCP window is closed and the server's buffer is full) aborts the
connection: the server drops it with a TCP reset (the ``hub.abort`` message, see
``LeanWebSocketProtocol`` in hub/server.py), so a client that never reads holds neither
a task nor megabytes of buffered frames. Whatever says the peer is gone (a
``websocket.disconnect``, an ``OSError`` from the server, a missed deadline) becomes
``PeerGone`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

from hub.protocol import Wire

log = logging.getLogger("hub.transport")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The ASGI message asking the server to drop the TCP connection at once (hub/server.py).
ABORT: Final[Message] = {"type": "hub.abort"}


class PeerGone(Exception):
    """The client is gone: it disconnected, its socket broke, or a write missed its deadline."""


class _Close:
    """The close frame, as an outbox item."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class _Control:
    """A frame the hub itself sends (ping, error): not counted in ``backlog``."""

    __slots__ = ("wire",)

    def __init__(self, wire: Wire) -> None:
        self.wire = wire


#: An outbox item: a frame to write, a control frame, the close, or a callback to run
#: once everything before it is written.
_Item = Wire | _Control | _Close | Callable[[], None]


class Transport:
    """One accepted WebSocket, seen through ASGI ``receive`` and ``send``.

    ``receive`` is for one reader at a time; everything sent goes through ``write``,
    ``ping`` and ``close``. ``on_lost`` is called once, from the writer, when a write
    finds the peer gone (the session then ends: the reader may be waiting forever on a
    client that stopped talking).
    """

    __slots__ = (
        "_flushed",
        "_lost",
        "_on_lost",
        "_outbox",
        "_ping_pending",
        "_receive",
        "_send",
        "_writer",
        "backlog",
        "closed",
        "send_timeout",
    )

    def __init__(
        self, receive: Receive, send: Send, *, send_timeout: float, on_lost: Callable[[], None] | None = None
    ) -> None:
        self._receive = receive
        self._send = send
        self.send_timeout = send_timeout
        self._on_lost = on_lost
        self._outbox: deque[_Item] | None = None  # created when needed: idle sockets are many
        self._writer: asyncio.Task[None] | None = None
        self._flushed: asyncio.Future[None] | None = None
        self._lost: PeerGone | None = None
        self._ping_pending = False
        #: Frames queued by ``write`` and not yet written.
        self.backlog = 0
        #: True once the close frame is written.
        self.closed = False

    @property
    def lost(self) -> bool:
        """True once the peer is known to be gone (nothing more will be written)."""
        return self._lost is not None

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the upgrade (HTTP 101), within ``send_timeout``; raises PeerGone."""
        await self._deliver({"type": "websocket.accept", "subprotocol": subprotocol})

    async def receive(self) -> Wire:
        """The next frame from the client (text or bytes); raises PeerGone when it is gone."""
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text: str | None = message.get("text")
            return text if text is not None else message.get("bytes") or b""
        if kind == "websocket.disconnect":
            raise PeerGone(f"the client closed the connection (code {message.get('code')})")
        raise RuntimeError(f"expected an ASGI 'websocket.receive' or 'websocket.disconnect', got {kind!r}")

    # ------------------------------------------------------------------- writing

    def write(self, frames: Sequence[Wire], then: Callable[[], None] | None = None) -> None:
        """Queue ``frames`` after everything queued before; returns at once.

        ``then`` runs (in the writer) once these frames are written; it is dropped with
        them if the connection closes or breaks first. Raises PeerGone when the peer is
        already gone.
        """
        if self._lost is not None:
            raise self._lost
        outbox = self._open_outbox()
        outbox.extend(frames)
        self.backlog += len(frames)
        if then is not None:
            outbox.append(then)
        self._start_writer()

    def ping(self, frame: Wire) -> None:
        """Queue a ping unless one is already waiting to be written (no pile-up)."""
        if self._ping_pending or self._lost is not None or self.closed:
            return
        self._ping_pending = True
        outbox = self._open_outbox()
        outbox.append(_Control(frame))
        outbox.append(self._ping_written)
        self._start_writer()

    def _ping_written(self) -> None:
        self._ping_pending = False

    async def flush(self) -> None:
        """Wait until everything queued is written; raises PeerGone if the peer went away."""
        if self._writer is not None:
            if self._flushed is None:
                self._flushed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._flushed)
        if self._lost is not None:
            raise self._lost

    async def close(self, code: int, reason: str, farewell: Wire) -> None:
        """Write ``farewell`` (the ``error`` frame) and the close frame, then return.

        What is being written now finishes first (within its deadline); what is still
        queued is dropped. Returns quietly when the peer is gone: a close is best effort,
        and a client that does not take it within ``send_timeout`` is aborted.
        """
        if self._lost is not None or self.closed:
            return
        outbox = self._open_outbox()
        outbox.clear()
        self.backlog = 0
        outbox.append(_Control(farewell))
        outbox.append(_Close(code, reason))
        self._start_writer()
        try:
            await self.flush()
        except PeerGone:
            log.debug("close %s: the client was gone", code)

    async def discard(self) -> None:
        """Drop whatever is queued and stop the writer; afterwards this transport holds no task."""
        if self._outbox is not None:
            self._outbox.clear()
        self.backlog = 0
        writer = self._writer
        if writer is not None:
            writer.cancel()
            await asyncio.wait((writer,))  # never raises the writer's cancellation; ours propagates

    # -------------------------------------------------------------------- the writer

    def _open_outbox(self) -> deque[_Item]:
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        return outbox

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_all())

    async def _write_all(self) -> None:
        """The one writer: empties the outbox in order, then ends (it is started again when needed)."""
        outbox = self._open_outbox()
        try:
            while outbox:
                item = outbox.popleft()
                if isinstance(item, str):
                    await self._deliver({"type": "websocket.send", "text": item})
                    self.backlog -= 1
                elif isinstance(item, bytes):
                    await self._deliver({"type": "websocket.send", "bytes": item})
                    self.backlog -= 1
                elif isinstance(item, _Control):
                    await self._write_control(item.wire)
                elif isinstance(item, _Close):
                    await self._deliver({"type": "websocket.close", "code": item.code, "reason": item.reason})
                    self.closed = True
                    outbox.clear()
                else:
                    item()
        except PeerGone as gone:
            self._lose(gone)
        except Exception:  # a bug, or a frame the server cannot encode: never a silent, stuck writer
            log.exception("the writer failed: aborting the connection")
            await self._abort()
            self._lose(PeerGone("the writer failed: connection aborted"))
        finally:
            self._writer = None
            self._outbox = None
            flushed, self._flushed = self._flushed, None
            if flushed is not None and not flushed.done():
                flushed.set_result(None)

    async def _write_control(self, wire: Wire) -> None:
        if isinstance(wire, str):
            await self._deliver({"type": "websocket.send", "text": wire})
        else:
            await self._deliver({"type": "websocket.send", "bytes": wire})

    def _lose(self, gone: PeerGone) -> None:
        if self._lost is None:
            self._lost = gone
            self.backlog = 0
            if self._on_lost is not None:
                self._on_lost()

    async def _deliver(self, message: Message) -> None:
        """One ASGI send within ``send_timeout``: the one place where a peer is found gone."""
        try:
            async with asyncio.timeout(self.send_timeout):
                await self._send(message)
        except TimeoutError:
            await self._abort()
            raise PeerGone(f"a write did not finish within {self.send_timeout:g} s: connection aborted") from None
        except OSError as exc:  # uvicorn's ClientDisconnected is one; so is a broken pipe
            raise PeerGone(f"the connection broke ({type(exc).__name__})") from None

    async def _abort(self) -> None:
        try:
            await self._send(ABORT)
        except (RuntimeError, OSError, KeyError) as exc:  # a server without the hook: it closes when we return
            log.debug("the server cannot abort a connection: %r", exc)
