"""The SSE channel: a session's frames as Server-Sent Events (docs/protocol.md §10).

``SseTransport`` is the WebSocket ``Transport`` (hub/transport.py) with another framing:
the same one writer, outbox, deadline per send and abort, so a stream that stops
reading costs what a stuck socket costs. What differs:

- the response's headers (200, ``text/event-stream``) go out with the first event, so a
  session that ends before it was ever open (a bad token in the ticket, the connection
  limit, a sick backend) is answered with a plain HTTP status instead
  (``HTTP_STATUS``), not with a stream that ends at once;
- each frame is one ``message`` event whose ``data`` is the frame's JSON, exactly as on
  a ``hub.v1.json`` WebSocket; ``connected`` and every notification carry ``id:``, the
  resume point: ``topic:offset`` pairs for all the connection's topics, which come back
  as ``Last-Event-ID``;
- the first event (``event: hub.stream``) names the stream and its secret, for
  ``POST /sse/<stream>``; a ping is a comment (``: ping``);
- the close is ``event: close`` with ``{"code", "reason"}``, the same codes as a
  WebSocket close (1012 on a drain: reconnect elsewhere at once), then the end of the
  response;
- client frames come from ``offer`` (the POST route, or the relay from another
  replica), not from the socket; the only thing read from the request is its
  ``http.disconnect``.

A client of a stream never answers pings. A stream counts as alive while it takes
writes: every ping that is written is taken as the client's ``pong``, and a write that
cannot finish within ``HUB_SEND_TIMEOUT`` ends the session (presence, slot, tasks); unlike
a WebSocket, the HTTP connection is closed by uvicorn rather than reset (``_abort``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from hub.codes import CloseCode
from hub.payload import dumps_json, loads_json
from hub.protocol import JSON, PING_FRAME, Wire
from hub.transport import Message, PeerGone, Receive, Send, Transport

log = logging.getLogger("hub.sse")

#: What a session that ends before its stream opened is answered with.
HTTP_STATUS: Final = {
    CloseCode.BAD_TOKEN: 401,
    CloseCode.TOKEN_EXPIRED: 401,
    CloseCode.FORBIDDEN: 403,
    CloseCode.PROTOCOL_ERROR: 400,
    CloseCode.FRAME_TOO_BIG: 413,
    CloseCode.LIMIT: 429,
    CloseCode.SERVICE_RESTART: 503,
    CloseCode.TRY_AGAIN_LATER: 503,
    CloseCode.GOING_AWAY: 503,
    CloseCode.INTERNAL_ERROR: 500,
}

HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx and others: do not buffer the stream
]

_PING = JSON.encode(PING_FRAME)
_PONG = JSON.encode({"type": "pong"})
_PING_EVENT = b": ping\n\n"
#: Client frames waiting for the session's reader; more are refused with 429.
INBOX_SIZE: Final = 16


def event_id(offsets: dict[str, str]) -> str:
    """The ``id:`` of an event: ``topic:offset`` pairs, sorted, joined by ``,``."""
    return ",".join(f"{topic}:{offset}" for topic, offset in sorted(offsets.items()))


def parse_event_id(text: str) -> dict[str, str]:
    """``Last-Event-ID`` back into a ``since`` map; raises ValueError when it is not one.

    The offsets themselves are checked by the session like any ``since`` (§8: 4002, 4003).
    """
    since: dict[str, str] = {}
    for pair in text.split(","):
        topic, sep, offset = pair.strip().partition(":")
        if not sep or not topic or not offset or topic in since:
            raise ValueError(f"expected topic:offset pairs separated by ',', got {text[:80]!r}")
        since[topic] = offset
    if len(since) > 32:
        raise ValueError("more than 32 topics in Last-Event-ID")
    return since


class SseTransport(Transport):
    """One ``GET /sse`` response, seen as a session's channel (hub/channel.py)."""

    __slots__ = ("_inbox", "_offsets", "_started", "_watcher", "hello")

    def __init__(
        self, receive: Receive, send: Send, *, send_timeout: float, on_lost: Callable[[], None], connect: Wire
    ) -> None:
        super().__init__(receive, send, send_timeout=send_timeout, on_lost=on_lost)
        self._inbox: asyncio.Queue[Wire | None] = asyncio.Queue(INBOX_SIZE)
        self._inbox.put_nowait(connect)  # the ticket's token and Last-Event-ID, as a connect frame
        self._offsets: dict[str, str] = {}
        self._started = False
        self._watcher: asyncio.Task[None] | None = None
        #: The ``hub.stream`` event's data, sent right after the headers.
        self.hello: dict[str, Any] = {}

    # ------------------------------------------------------------------ receiving

    async def accept(self, subprotocol: str | None) -> None:
        """Start listening for the client going away; the headers wait for the first frame."""
        self._watcher = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._lose(PeerGone("the client closed the stream"))
                self._wake()
                return

    def _wake(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(None)

    def offer(self, frame: Wire) -> bool:
        """A client frame from a POST; False when too many wait already (the caller says 429)."""
        if self.lost or self.closed:
            return False
        try:
            self._inbox.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    async def receive(self) -> Wire:
        frame = await self._inbox.get()
        if frame is None or self._lost is not None:
            self._wake()  # another receive() must not wait forever either
            raise self._lost or PeerGone("the stream ended")
        return frame

    # -------------------------------------------------------------------- sending

    async def write(self, frames: Sequence[Wire], then: Callable[[], None] | None = None) -> None:
        if not self._started:
            await self._start()
        await super().write(frames, then)

    async def _write_now(
        self, frames: Sequence[Wire], then: Callable[[], None] | None
    ) -> tuple[Sequence[Wire], Callable[[], None] | None]:
        # uvicorn's HTTP send waits while its buffer is full: only the writer task may wait
        return frames, then

    async def _start(self) -> None:
        """The headers and the ``hub.stream`` event, within the send deadline."""
        self._started = True
        hello = f"event: hub.stream\ndata: {dumps_json(self.hello)}\n\n".encode()
        try:
            async with asyncio.timeout(self.send_timeout):
                await self._send({"type": "http.response.start", "status": 200, "headers": HEADERS})
                await self._send({"type": "http.response.body", "body": hello, "more_body": True})
        except (TimeoutError, OSError):
            gone = PeerGone("the stream could not be opened in time")
            self._lose(gone)
            raise gone from None

    def _message(self, wire: Wire) -> Message:
        text = wire if isinstance(wire, str) else wire.decode()
        if text == _PING:
            body = _PING_EVENT
        else:
            ident = self._resume_point(text)
            head = f"id: {ident}\n" if ident else ""
            body = (head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()
        return {"type": "http.response.body", "body": body, "more_body": True}

    def _resume_point(self, text: str) -> str:
        """Follow the offsets the frames carry; the ``id:`` of this one ('' for none)."""
        if not text.startswith(('{"type":"notification"', '{"type":"connected"')):
            return ""
        frame = loads_json(text)
        if frame.get("type") == "connected":
            offsets = frame.get("offsets") or {}
            self._offsets.update({str(t): str(o) for t, o in offsets.items()})
        elif isinstance(frame.get("offset"), str):
            self._offsets[str(frame["topic"])] = frame["offset"]
        else:
            return ""
        return event_id(self._offsets)

    def _ping_sent(self) -> None:
        super()._ping_sent()
        with contextlib.suppress(asyncio.QueueFull):  # the stream took it: the client is there
            self._inbox.put_nowait(_PONG)

    def _close_message(self, code: int, reason: str) -> Message:
        body = f"event: close\ndata: {dumps_json({'code': code, 'reason': reason})}\n\n".encode()
        return {"type": "http.response.body", "body": body, "more_body": False}

    async def close(self, code: int, reason: str, farewell: Wire) -> None:
        """Before the stream opened: an HTTP status (``HTTP_STATUS``) and the error as JSON;
        after: the ``error`` frame, ``event: close`` and the end of the response."""
        if self._started:
            await super().close(code, reason, farewell)
            return
        if self.lost or self.closed:
            return
        self._started = self.closed = True
        status = HTTP_STATUS.get(CloseCode(code), 400) if code in CloseCode._value2member_map_ else 400
        body = dumps_json({"error": reason, "code": code}).encode()
        try:
            async with asyncio.timeout(self.send_timeout):
                await self._send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
                    }
                )
                await self._send({"type": "http.response.body", "body": body})
        except (TimeoutError, OSError) as exc:
            log.debug("refusing a stream with %s: the client was gone (%r)", status, exc)

    async def _abort(self) -> None:
        """No reset for an HTTP response: uvicorn's send waits on a full buffer before it looks
        at the message, so asking would hang. The session ends; uvicorn closes the connection
        when the app returns (what is still buffered for it is bounded by its flow control)."""
        log.debug("a stream missed its send deadline: ending it without a reset")

    async def discard(self) -> None:
        await super().discard()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.wait((watcher,))
