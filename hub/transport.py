"""The socket under one session: accept, receive, and the one writer (docs/protocol.md §3, §8).

Everything the hub sends on a WebSocket goes through ``Transport``: the upgrade's
acceptance, notifications, the ``connected`` frame, pings, the ``error`` frame and the
close. When nothing is queued and the socket can take a frame at once, ``write`` sends
it right away (the common case: no task, no extra turn of the event loop);
``write_at_once`` does the same for one frame without awaiting anything, through the
server's ``send_now`` (hub/server.py), for code outside the session's task (a live
notification written where it arrives: hub/delivery.py). Otherwise frames wait in one
outbox, in order, and one writer task sends them: a ping cannot race a frame, pings
cannot pile up behind a stuck send (one at most is pending), and a close
comes after what is being sent and instead of what is still queued. Only the writer
task ever waits on the client, so whoever writes is never stuck (the session keeps
reading its subscription); the writer task exists only while the outbox holds
something, so an idle socket costs no task.

"At once" is the server's word: a send marked ``"hub.nowait"`` raises BlockingIOError
instead of waiting while the socket's buffer is full (``LeanWebSocketProtocol`` in
hub/server.py; a server that ignores the mark just sends, waiting if it must).

Every send has a deadline (``send_timeout``). A send that cannot finish (a client that
stopped reading: its TCP window is closed and the server's buffer is full) aborts the
connection: the server drops it with a TCP reset (the ``hub.abort`` message, see
``LeanWebSocketProtocol`` in hub/server.py), so a client that never reads holds neither
a task nor megabytes of buffered frames. The deadline costs one timer per
``send_timeout`` of activity, not one per frame: the timer looks at when the send in
flight began, and is armed again only while the writer is busy. Whatever says the peer is gone (a
``websocket.disconnect``, an ``OSError`` from the server, a missed deadline) becomes
``PeerGone`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

from hub.protocol import Wire

log = logging.getLogger("hub.transport")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: The server's send without waiting: sends a ``websocket.send`` message in the caller's task
#: and returns True, or returns False (nothing sent) when it cannot at once (its buffer is
#: full, the connection is closing). The ASGI scope carries it as ``extensions["hub.send_now"]``
#: (``LeanWebSocketProtocol.send_now`` in hub/server.py).
SendNow = Callable[[Message], bool]

#: The ASGI message asking the server to drop the TCP connection at once (hub/server.py).
ABORT: Final[Message] = {"type": "hub.abort"}

_COMPACT_AFTER: Final = 256


class PeerGone(Exception):
    """The client is gone: it disconnected, its socket broke, or a send missed its deadline."""


class _Control:
    """A frame the hub itself sends (ping, error), not counted in ``backlog``; or, with
    ``message``, an ASGI message of its own (the acceptance, the close: ``final``)."""

    __slots__ = ("final", "message", "wire")

    def __init__(self, wire: Wire | None = None, message: Message | None = None, final: bool = False) -> None:
        self.wire = wire
        self.message = message
        self.final = final


#: An outbox item: a notification frame, a control item, or a callback to run once
#: everything before it is sent.
_Item = Wire | _Control | Callable[[], None]


class Transport:
    """One WebSocket, seen through ASGI ``receive`` and ``send``.

    ``receive`` is for one reader at a time; everything sent goes through ``accept``,
    ``write``, ``ping`` and ``close``. ``on_lost`` is called once, when a send finds the
    peer gone (the session then ends: its reader may be waiting forever on a client
    that stopped talking).
    """

    __slots__ = (
        "_flushed",
        "_head",
        "_lost",
        "_on_lost",
        "_outbox",
        "_overdue",
        "_ping_pending",
        "_receive",
        "_send",
        "_send_at_once",
        "_since",
        "_watch",
        "_writer",
        "backlog",
        "closed",
        "send_timeout",
    )

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        send_timeout: float,
        on_lost: Callable[[], None] | None = None,
        send_now: SendNow | None = None,
    ) -> None:
        """``send_now``: the server's send without waiting, if it has one (``write_at_once``)."""
        self._receive = receive
        self._send = send
        self._send_at_once = send_now
        self.send_timeout = send_timeout
        self._on_lost = on_lost
        self._outbox: list[_Item] = []  # what is queued starts at _head (a list: idle sockets are many)
        self._head = 0
        self._writer: asyncio.Task[None] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._since = 0.0  # when the send in flight began (loop time); 0 when none is
        self._overdue = False
        self._flushed: asyncio.Future[None] | None = None
        self._lost: PeerGone | None = None
        self._ping_pending = False
        #: Notification frames queued by ``write`` and not yet sent.
        self.backlog = 0
        #: True once the close frame is sent.
        self.closed = False

    @property
    def lost(self) -> bool:
        """True once the peer is known to be gone (nothing more will be sent)."""
        return self._lost is not None

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the upgrade (HTTP 101) within ``send_timeout``; raises PeerGone."""
        message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if not await self._send_now(message):
            self._outbox.append(_Control(message=message))
            self._start_writer()
            await self.flush()

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

    # ------------------------------------------------------------------- sending

    async def write(self, frames: Sequence[Wire], then: Callable[[], None] | None = None) -> None:
        """Send ``frames`` after everything queued before, without waiting on the client.

        What the socket takes at once is sent now; the rest is queued for the writer task.
        ``then`` runs once these frames are sent; it is dropped with them if the
        connection closes or breaks first. Raises PeerGone when the peer is gone.
        """
        if self._lost is not None:
            raise self._lost
        outbox = self._outbox
        if self._writer is None and self._head >= len(outbox):  # nothing queued, nobody writing
            frames, then = await self._write_now(frames, then)
        outbox.extend(frames)
        self.backlog += len(frames)
        if then is not None:
            outbox.append(then)
        if self._head < len(outbox):  # (a ping may have come while this task was writing)
            self._start_writer()

    @property
    def sends_at_once(self) -> bool:
        """True when ``write_at_once`` may be used: the server can send without waiting, and
        nothing is queued or being sent, nor the close, nor is the peer known to be gone."""
        return (
            self._send_at_once is not None
            and self._writer is None
            and self._head >= len(self._outbox)
            and self._lost is None
            and not self.closed
        )

    def write_at_once(self, frame: Wire, then: Callable[[], None]) -> None:
        """``write`` of one frame without awaiting anything, for when ``sends_at_once``: it is
        sent in the caller's task if the socket takes it at once (then ``then`` runs), else
        queued for the writer task as ``write`` queues it. Never raises: a peer found gone
        here is raised by the next ``write`` or ``flush``."""
        send = self._send_at_once
        assert send is not None, "expected write_at_once only when sends_at_once"
        try:
            sent = send(self._message(frame))
        except OSError as exc:
            self._lose(_broken(exc))
            return
        except Exception:  # as in the writer task: a bug must not pass for a sent frame
            log.exception("a send failed: the connection is given up")
            self._lose(PeerGone("a send failed"))
            return
        if sent:
            then()
            return
        self._outbox += (frame, then)
        self.backlog += 1
        self._start_writer()

    async def _write_now(
        self, frames: Sequence[Wire], then: Callable[[], None] | None
    ) -> tuple[Sequence[Wire], Callable[[], None] | None]:
        """Send what the socket takes at once, in this task; return what is left to queue."""
        self._writer = asyncio.current_task()  # the writer for now: a ping meanwhile waits its turn
        try:
            for sent, wire in enumerate(frames):
                if not await self._send_now(self._message(wire)):
                    return frames[sent:], then
        finally:
            self._writer = None
        if then is not None:
            then()
        return (), None

    async def _send_now(self, message: Message) -> bool:
        """Send ``message`` if the socket takes it at once; False when it would have to wait."""
        message["hub.nowait"] = True
        try:
            await self._send(message)
        except BlockingIOError:  # the socket's buffer is full: the writer task waits for it
            message.pop("hub.nowait", None)  # queued for the writer task, which may wait
            return False
        except OSError as exc:
            gone = _broken(exc)
            self._lose(gone)
            raise gone from None
        except Exception:  # as in the writer task: a bug, or a frame the server cannot encode
            gone = await self._fail()
            raise gone from None
        return True

    def ping(self, frame: Wire) -> None:
        """Queue a ping unless one is already waiting to be sent (no pile-up)."""
        if self._ping_pending or self._lost is not None or self.closed:
            return
        self._ping_pending = True
        outbox = self._outbox
        outbox.append(_Control(frame))
        outbox.append(self._ping_sent)
        self._start_writer()

    def _ping_sent(self) -> None:
        self._ping_pending = False

    async def flush(self) -> None:
        """Wait until everything queued is sent; raises PeerGone if the peer went away."""
        if self._writer is not None:
            if self._flushed is None:
                self._flushed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._flushed)
        if self._lost is not None:
            raise self._lost

    async def close(self, code: int, reason: str, farewell: Wire) -> None:
        """Send ``farewell`` (the ``error`` frame) and the close frame, then return.

        What is being sent now finishes first (within its deadline); what is still
        queued is dropped. Returns quietly when the peer is gone: a close is best effort,
        and a client that does not take it within ``send_timeout`` is aborted.
        """
        if self._lost is not None or self.closed:
            return
        outbox = self._outbox
        del outbox[self._head :]  # what is being sent stays; the rest is dropped
        self.backlog = 0
        outbox.append(_Control(farewell))
        outbox.append(_Control(message=self._close_message(code, reason), final=True))
        self._start_writer()
        try:
            await self.flush()
        except PeerGone:
            log.debug("close %s: the client was gone", code)

    async def discard(self) -> None:
        """Drop whatever is queued and stop the writer; afterwards this transport holds no task."""
        del self._outbox[self._head :]
        self.backlog = 0
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        writer = self._writer
        if writer is not None:
            writer.cancel()
            await asyncio.wait((writer,))  # never raises the writer's cancellation; ours propagates

    # ------------------------------------------------ what a frame is on this socket

    def _message(self, wire: Wire) -> Message:
        """The ASGI message carrying ``wire`` (a subclass carries frames another way: hub/sse.py)."""
        return _message(wire)

    def _close_message(self, code: int, reason: str) -> Message:
        """The ASGI message that ends the connection, after which nothing is sent."""
        return {"type": "websocket.close", "code": code, "reason": reason}

    # -------------------------------------------------------------------- the writer

    def _start_writer(self) -> None:
        if self._writer is None:
            loop = asyncio.get_running_loop()
            self._writer = loop.create_task(self._write_all())
            if self._watch is None:
                self._watch = loop.call_later(self.send_timeout, self._check_deadline)

    async def _write_all(self) -> None:
        """The one writer: empties the outbox in order, then ends (it is started again when needed)."""
        outbox = self._outbox
        try:
            while self._head < len(outbox):
                item = outbox[self._head]
                self._head += 1
                if self._head >= _COMPACT_AFTER:  # a writer that never idles must not keep what it sent
                    del outbox[: self._head]
                    self._head = 0
                if isinstance(item, str | bytes):
                    await self._deliver(self._message(item))
                    self.backlog -= 1
                elif isinstance(item, _Control):
                    await self._deliver_control(item)
                else:
                    item()
        except PeerGone as gone:
            self._lose(gone)
        except asyncio.CancelledError:
            if not self._overdue:
                raise  # discard(): the session is done with this transport
            self._overdue = False
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await self._abort()
            self._lose(PeerGone(f"a send did not finish within {self.send_timeout:g} s: connection aborted"))
        except Exception:  # a bug, or a frame the server cannot encode: never a silent, stuck writer
            await self._fail()
        finally:
            if self._lost is not None and self._watch is not None:
                self._watch.cancel()
                self._watch = None
            self._writer = None
            outbox.clear()
            self._head = 0
            flushed, self._flushed = self._flushed, None
            if flushed is not None and not flushed.done():
                flushed.set_result(None)

    async def _deliver_control(self, item: _Control) -> None:
        message = item.message
        if message is None:
            assert item.wire is not None
            message = self._message(item.wire)
        await self._deliver(message)
        if item.final:
            self.closed = True
            del self._outbox[self._head :]

    async def _deliver(self, message: Message) -> None:
        """One ASGI send: the one place where a broken connection is found (the deadline is
        watched by ``_check_deadline``)."""
        self._since = time.monotonic()  # the event loop's clock
        try:
            await self._send(message)
        except OSError as exc:
            raise _broken(exc) from None
        finally:
            self._since = 0.0

    def _check_deadline(self) -> None:
        """The writer's timer: cancel a send older than ``send_timeout``, else look again when it
        would be; once the writer is idle, it is armed again by the next ``_start_writer``."""
        self._watch = None
        writer = self._writer
        if writer is None:
            return
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        since = self._since or now  # between sends (a callback): give the next one its time
        left = since + self.send_timeout - now
        if left <= 0:
            self._overdue = True
            writer.cancel()
        else:
            self._watch = loop.call_later(left, self._check_deadline)

    async def _fail(self) -> PeerGone:
        """A send failed for no reason of the peer's (called while handling the exception)."""
        log.exception("a send failed: aborting the connection")
        await self._abort()
        gone = PeerGone("a send failed: connection aborted")
        self._lose(gone)
        return gone

    def _lose(self, gone: PeerGone) -> None:
        if self._lost is None:
            self._lost = gone
            self.backlog = 0
            if self._on_lost is not None:
                self._on_lost()

    async def _abort(self) -> None:
        """Ask the server to reset the connection (a server without the hook closes it when we return)."""
        try:
            await self._send(ABORT)
        except (RuntimeError, OSError, KeyError) as exc:  # a server without the hook: it closes when we return
            log.debug("the server cannot abort a connection: %r", exc)


def _message(wire: Wire) -> Message:
    """The ASGI message sending ``wire`` (text for str, binary for bytes)."""
    if isinstance(wire, str):
        return {"type": "websocket.send", "text": wire}
    return {"type": "websocket.send", "bytes": wire}


def _broken(error: OSError) -> PeerGone:
    """What a send's OSError means (uvicorn's ClientDisconnected is one, so is a broken pipe):
    the one place where it is decided."""
    return PeerGone(f"the connection broke ({type(error).__name__})")
