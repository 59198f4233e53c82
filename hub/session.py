"""One WebSocket connection, from its upgrade to its close (DESIGN.md §3, §5).

States: NEW → AUTHENTICATING → OPEN → CLOSED, checked on every transition. Once
open, three tasks run in one task group: the reader (client frames, rate limit,
token refresh), the writer (live notifications, in order, without duplicates) and
the timer (pings, the silence watchdog, token expiry, an external close request).
Whatever ends the connection goes through one path: a ``Disconnect`` raised in
any task, turned into an ``error`` frame and a close code in ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from hub.auth import Claims, TokenError
from hub.backends.base import (
    BackendUnavailable,
    Connection,
    History,
    HistoryRead,
    Subscription,
    SubscriptionGap,
    SubscriptionOverflow,
)
from hub.codes import CloseCode
from hub.logs import bind_connection
from hub.notification import now_ms
from hub.protocol import (
    PING_FRAME,
    Codec,
    Connect,
    Pong,
    ProtocolError,
    Refresh,
    Wire,
    connected_frame,
    error_frame,
    parse_client_frame,
)
from hub.topics import ZERO_OFFSET, parse_offset

if TYPE_CHECKING:
    from hub.node import Node

log = logging.getLogger("hub.session")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class State(enum.Enum):
    """Where a session is in its life."""

    NEW = "new"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


_TRANSITIONS = {
    State.NEW: {State.AUTHENTICATING, State.CLOSED},
    State.AUTHENTICATING: {State.OPEN, State.CLOSED},
    State.OPEN: {State.CLOSED},
    State.CLOSED: set(),
}


class Disconnect(Exception):
    """Ends the session; ``code`` None means the client already went away."""

    def __init__(self, code: CloseCode | None, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RateLimiter:
    """A token bucket: ``rate`` frames per second with a burst of ``2 * rate``."""

    __slots__ = ("_allowance", "_burst", "_last", "_rate")

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._burst = 2 * rate
        self._allowance = self._burst
        self._last = time.monotonic()

    def allow(self) -> bool:
        """Take one token; False when the bucket is empty."""
        now = time.monotonic()
        self._allowance = min(self._burst, self._allowance + (now - self._last) * self._rate)
        self._last = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True


class Session:
    """Serves one accepted-for-upgrade WebSocket; ``run`` returns when it is closed.

    Kept small, since a replica holds tens of thousands: ``__slots__``, two tasks per
    open socket (the connection's own task writes, one more reads) and a timer handle
    instead of a timer task.
    """

    __slots__ = (
        "_limiter",
        "_main",
        "_receive",
        "_send",
        "_stop",
        "_subprotocol",
        "_text",
        "_timer",
        "claims",
        "codec",
        "conn_id",
        "last",
        "last_heard",
        "next_ping",
        "node",
        "state",
    )

    def __init__(self, node: Node, codec: Codec, subprotocol: str | None, receive: Receive, send: Send) -> None:
        self.node = node
        self.codec = codec
        self._subprotocol = subprotocol
        self._receive = receive
        self._send = send
        self._text = not codec.binary
        self.conn_id = secrets.token_hex(8)
        self.state = State.NEW
        self.claims: Claims | None = None
        self.last: dict[str, tuple[int, int]] = {}  # per topic: the offset last delivered
        self.last_heard = time.monotonic()
        self.next_ping = 0.0
        self._limiter = RateLimiter(node.settings.max_frame_rate)
        self._stop: Disconnect | None = None
        self._main: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _set_state(self, state: State) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"session {self.conn_id}: expected a transition from {self.state}, got {state}")
        self.state = state

    # ------------------------------------------------------------------ public

    def close(self, code: CloseCode | None, message: str = "") -> None:
        """Ask the session to close with ``code`` (None: the peer is gone); returns at once.

        Safe from any task or callback; the first reason wins.
        """
        if self._stop is None:
            self._stop = Disconnect(code, message)
            if self._main is not None and self.state is State.OPEN:
                self._main.cancel()

    async def run(self) -> None:
        """Accept the upgrade, serve the connection, and always leave it closed and forgotten."""
        node = self.node
        metrics = node.metrics
        bind_connection(self.conn_id)  # every line logged for this socket carries it (hub.logs)
        await self._send({"type": "websocket.accept", "subprotocol": self._subprotocol})
        self._set_state(State.AUTHENTICATING)
        subscription: Subscription | None = None
        conn: Connection | None = None
        outcome = Disconnect(None)
        try:
            connect = await self._await_connect()
            self.claims = claims = self._verify(connect.token)
            bind_connection(self.conn_id, claims.user)
            for topic in connect.since:
                if topic not in claims.topics:
                    raise Disconnect(CloseCode.FORBIDDEN, f"topic {topic!r} in 'since' is not granted by the token")
            conn = Connection(self.conn_id, claims.user, node.settings.replica_id)
            # Presence and the live queue are independent: one round trip for both.
            added, subscribed = await asyncio.gather(
                node.backend.presence.add(conn), node.backend.broker.subscribe(claims.topics), return_exceptions=True
            )
            if isinstance(subscribed, BaseException):
                raise subscribed
            subscription = subscribed
            if isinstance(added, BaseException):
                raise added
            if added > node.settings.max_connections_per_user:
                raise Disconnect(
                    CloseCode.LIMIT,
                    f"user has {added - 1} connections, the limit is {node.settings.max_connections_per_user}",
                )
            await self._recover(claims, connect.since)
            self._set_state(State.OPEN)
            metrics.connections.inc()
            try:
                node.register(self)
                await self._serve(subscription)
            finally:
                node.unregister(self)
                metrics.connections.dec()
        except Disconnect as disconnect:
            outcome = disconnect
        except OSError:
            outcome = Disconnect(None)  # the socket broke under a send
        except BackendUnavailable as exc:
            log.warning("session %s: %s", self.conn_id, exc)
            outcome = Disconnect(CloseCode.TRY_AGAIN_LATER, "the hub cannot serve this connection now; retry later")
        except Exception:
            log.exception("session %s failed", self.conn_id)
            metrics.errors.labels(where="session").inc()
            outcome = Disconnect(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._set_state(State.CLOSED)
            if subscription is not None:
                await _quietly(subscription.close())
            if conn is not None:
                await _quietly(node.backend.presence.remove(conn))
        log.debug("closing: %s %s", outcome.code if outcome.code is not None else "(socket gone)", outcome.message)
        if outcome.code is not None:
            await self._close(outcome.code, outcome.message)

    async def _serve(self, subscription: Subscription) -> None:
        """Write live notifications in this task while another task reads; return on the first
        reason to stop, raised as Disconnect."""
        main = self._main = asyncio.current_task()
        assert main is not None
        if self._stop is not None:  # closed (a drain) before it could start serving
            raise self._stop
        reader = asyncio.get_running_loop().create_task(self._reader())
        reader.add_done_callback(self._reader_done)
        self.next_ping = time.monotonic() + self.node.settings.ping_interval
        self._arm_timer()
        try:
            await self._writer(subscription)
        except asyncio.CancelledError:
            if self._stop is None or main.uncancel() > 0:
                raise  # cancelled from outside (server shutdown), not by close()
        except Disconnect as disconnect:
            self.close(disconnect.code, disconnect.message)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Disconnect):
                await reader
        assert self._stop is not None
        raise self._stop

    def _reader_done(self, reader: asyncio.Task[None]) -> None:
        if reader.cancelled():
            return
        error = reader.exception()
        if isinstance(error, Disconnect):
            self.close(error.code, error.message)
        elif isinstance(error, OSError):
            self.close(None)
        elif error is not None:
            log.error("session %s: reader failed", self.conn_id, exc_info=error)
            self.close(CloseCode.INTERNAL_ERROR, "internal error")

    # --------------------------------------------------------------- the steps

    async def _await_connect(self) -> Connect:
        timeout = self.node.settings.auth_timeout
        try:
            async with asyncio.timeout(timeout):
                frame = await self._next_frame()
        except TimeoutError:
            raise Disconnect(CloseCode.BAD_TOKEN, f"expected a connect frame within {timeout:g} s") from None
        if not isinstance(frame, Connect):
            raise Disconnect(CloseCode.BAD_TOKEN, f"expected a connect frame first, got {type(frame).__name__.lower()}")
        return frame

    def _verify(self, token: str) -> Claims:
        try:
            return self.node.auth.verify(token)
        except TokenError as exc:
            self.node.metrics.auth_failures.labels(code=str(int(exc.code))).inc()
            raise Disconnect(exc.code, str(exc)) from None

    async def _recover(self, claims: Claims, since: dict[str, str]) -> None:
        """Send ``connected``, then history above each ``since`` offset (DESIGN.md §5).

        Called once the live subscription exists, so nothing published from then on is
        missed; the writer drops live notifications at or below what was replayed. A topic
        without ``since`` starts at its latest offset as read now: whatever the live queue
        holds up to it was published before ``connected`` and is not for this connection,
        and that offset is the resume point the client gets in ``offsets``.
        """
        node = self.node
        history = node.backend.history
        if since:
            node.metrics.reconnects.inc()
        if history is None:
            await self._send_frame(self._connected(claims, recovered=not since, offsets={}))
            return
        fresh = [t for t in claims.topics if t not in since]
        reads, latest = await asyncio.gather(_read(history, since), _latest(history, fresh))
        recovered = all(read.complete for read in reads.values())
        offsets: dict[str, str] = {}
        for topic in claims.topics:
            read = reads.get(topic)
            found = read.notifications if read is not None else ()
            if read is not None and read.latest is not None:  # another site's offset: start at ours
                offsets[topic] = read.latest
            else:
                offsets[topic] = (found[-1].offset or ZERO_OFFSET) if found else latest.get(topic) or since[topic]
            self.last[topic] = parse_offset(offsets[topic])
        await self._send_frame(self._connected(claims, recovered=recovered, offsets=offsets))
        for read in reads.values():
            for notification in read.notifications:
                await self._send_wire(notification.frame(self.codec))
            node.metrics.replayed.inc(len(read.notifications))

    def _connected(self, claims: Claims, *, recovered: bool, offsets: dict[str, str]) -> dict[str, Any]:
        settings = self.node.settings
        return connected_frame(
            conn_id=self.conn_id,
            user=claims.user,
            topics=list(claims.topics),
            replica=settings.replica_id,
            ping_interval=settings.ping_interval,
            recovered=recovered,
            offsets=offsets,
        )

    async def _backfill(self) -> None:
        """After a live gap, send what history holds above each topic's last delivered offset."""
        history = self.node.backend.history
        assert self.claims is not None
        self.node.metrics.gaps.inc()
        if history is None:
            return  # at-most-once without history: nothing to back-fill from
        after = {t: f"{k[0]}-{k[1]}" for t, k in self.last.items()}
        reads = await history.read(after)
        for read in reads.values():
            for notification in read.notifications:
                await self._deliver(notification.topic, notification.key, notification.frame(self.codec))

    # ----------------------------------------------------------------- the tasks

    async def _reader(self) -> None:
        while True:
            frame = await self._next_frame()
            if isinstance(frame, Pong):
                continue
            if isinstance(frame, Refresh):
                claims = self._verify(frame.token)
                assert self.claims is not None
                if claims.user != self.claims.user:
                    raise Disconnect(CloseCode.BAD_TOKEN, "expected a refresh token for the same user")
                self.claims = Claims(self.claims.user, self.claims.topics, claims.exp)
                if self._timer is not None:
                    self._timer.cancel()
                self._arm_timer()
                continue
            raise Disconnect(CloseCode.PROTOCOL_ERROR, "expected refresh or pong, got a second connect")

    async def _writer(self, subscription: Subscription) -> None:
        metrics = self.node.metrics
        observe = metrics.delivery_latency.observe
        codec = self.codec
        while True:
            try:
                batch = await subscription.receive()
            except SubscriptionOverflow as exc:
                metrics.overflows.inc()
                raise Disconnect(CloseCode.TRY_AGAIN_LATER, f"too slow: {exc}") from None
            except SubscriptionGap:
                await self._backfill()
                continue
            sent = 0
            for notification in batch:
                if notification.offset is not None and not self._is_new(notification.topic, notification.key):
                    continue
                await self._send_wire(notification.frame(codec))
                observe(max(0, now_ms() - notification.ts) / 1000)
                sent += 1
            subscription.ack()
            metrics.notifications_out.inc(sent)

    async def _deliver(self, topic: str, key: tuple[int, int], wire: Wire) -> None:
        if self._is_new(topic, key):
            await self._send_wire(wire)
            self.node.metrics.notifications_out.inc()

    def _is_new(self, topic: str, key: tuple[int, int]) -> bool:
        if key <= self.last.get(topic, (0, 0)):
            return False
        self.last[topic] = key
        return True

    def _arm_timer(self) -> None:
        """Schedule the next check: a ping, the silence watchdog or the token's expiry."""
        assert self.claims is not None
        until_expiry = self.claims.exp - time.time()
        wait = min(self.next_ping - time.monotonic(), until_expiry)
        self._timer = asyncio.get_running_loop().call_later(max(wait, 0.0), self._on_timer)

    def _on_timer(self) -> None:
        assert self.claims is not None
        if self._stop is not None:
            return
        now = time.monotonic()
        interval = self.node.settings.ping_interval
        if self.claims.exp - time.time() <= 0:
            self.close(CloseCode.TOKEN_EXPIRED, "the token expired; send 'refresh' before 'exp'")
            return
        if now >= self.next_ping:
            if now - self.last_heard > 2 * interval:
                self.close(CloseCode.GOING_AWAY, f"heard nothing for {2 * interval:g} s")
                return
            self.next_ping = now + interval
            ping = asyncio.get_running_loop().create_task(self._send_frame(PING_FRAME))
            ping.add_done_callback(_ignore_result)
        self._arm_timer()

    # --------------------------------------------------------------- the socket

    async def _next_frame(self) -> Connect | Refresh | Pong:
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            raise Disconnect(None)
        if kind != "websocket.receive":
            raise RuntimeError(f"expected an ASGI 'websocket.receive' message, got {kind!r}")
        self.last_heard = time.monotonic()
        if not self._limiter.allow():
            raise Disconnect(CloseCode.LIMIT, f"more than {self.node.settings.max_frame_rate:g} frames per second")
        text = message.get("text")
        data: Wire = text if text is not None else message.get("bytes") or b""
        try:
            return parse_client_frame(self.codec, data)
        except ProtocolError as exc:
            raise Disconnect(exc.code, str(exc)) from None

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        await self._send_wire(self.codec.encode(frame))

    async def _send_wire(self, wire: Wire) -> None:
        if self._text:
            await self._send({"type": "websocket.send", "text": wire})
        else:
            await self._send({"type": "websocket.send", "bytes": wire})

    async def _close(self, code: CloseCode, message: str) -> None:
        self.node.metrics.closes.labels(code=str(int(code))).inc()
        try:
            await self._send_frame(error_frame(code, message))
            reason = message.encode()[:123].decode(errors="ignore")  # a close reason fits 123 bytes
            await self._send({"type": "websocket.close", "code": int(code), "reason": reason})
        except Exception:  # the client may be gone already; the close is best effort
            log.debug("session %s: close %s after the socket went away", self.conn_id, int(code))


async def _read(history: History, after: dict[str, str]) -> dict[str, HistoryRead]:
    return await history.read(after) if after else {}


async def _latest(history: History, topics: list[str]) -> dict[str, str]:
    return await history.latest(topics) if topics else {}


def _ignore_result(task: asyncio.Task[None]) -> None:
    """A ping that failed because the socket went away: the reader notices and ends the session."""
    if not task.cancelled():
        task.exception()


async def _quietly(awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("clean-up step failed")
