"""One WebSocket connection, from its upgrade to its close (docs/protocol.md §3, §5, §8).

States: NEW → AUTHENTICATING → OPEN → CLOSED, checked on every transition. The session
decides and does no I/O of its own: frames go in and out through its ``Transport``
(hub/transport.py), its place in each topic's stream is kept by its ``Cursor``
(hub/cursor.py), and what it needs of the replica is the narrow ``Host`` below (the
``Node`` is one; neither module imports the other).

Once open, the connection's own task pumps live notifications into the transport
(``Delivery``, hub/delivery.py), a reader task takes client frames (``pong``,
``refresh``), and ``Liveness`` (hub/liveness.py) keeps time: pings, the silence
watchdog, the token's expiry, the frame rate. Whatever ends the connection goes through
one path: a ``Disconnect`` raised anywhere (or ``close`` called), answered in ``run``
with an ``error`` frame and the close code.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from typing import NoReturn

from hub.auth import Claims, TokenError
from hub.backends.base import BackendUnavailable, Connection, Subscription
from hub.channel import Channel, ChannelFactory
from hub.codes import CloseCode
from hub.delivery import Delivery, TooSlow
from hub.host import Host
from hub.lease import BackendTimeout, acquire, release, turns
from hub.liveness import Liveness
from hub.logs import bind_connection
from hub.protocol import (
    CODECS,
    PING_FRAME,
    ClientFrame,
    Codec,
    Connect,
    Pong,
    ProtocolError,
    Read,
    Wire,
    connected_frame,
    error_frame,
    parse_client_frame,
)
from hub.read_handler import mark_read, subscription_keys, unread_counts
from hub.transport import PeerGone, Receive, Scope, Send, SendNow, Transport

__all__ = ["Disconnect", "Host", "Receive", "Scope", "Send", "Session", "State"]

log = logging.getLogger("hub.session")

_PINGS = {name: codec.encode(PING_FRAME) for name, codec in CODECS.items()}  # shared by every session


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


class Session:
    """Serves one accepted-for-upgrade WebSocket; ``run`` returns when it is closed and forgotten.

    Kept small, since a replica holds tens of thousands: ``__slots__``, two tasks per open
    socket (its own task pumps, one more reads; a writer task only while frames wait) and
    a timer handle instead of a timer task.
    """

    __slots__ = (
        "_conn",
        "_main",
        "_stop",
        "_subprotocol",
        "_subscription",
        "_unread",
        "claims",
        "codec",
        "conn_id",
        "delivery",
        "host",
        "liveness",
        "state",
        "transport",
    )

    def __init__(
        self,
        host: Host,
        codec: Codec,
        subprotocol: str | None,
        receive: Receive,
        send: Send,
        channel: ChannelFactory | None = None,
        send_now: SendNow | None = None,
    ) -> None:
        """A session on the WebSocket of ``receive``/``send`` (and the server's ``send_now``,
        if it has one: hub/transport.py), or on what ``channel`` makes (SSE)."""
        self.host = host
        self.codec = codec
        self._subprotocol = subprotocol
        settings = host.settings
        transport: Channel
        if channel is None:
            transport = Transport(
                receive, send, send_timeout=settings.send_timeout, on_lost=self._gone, send_now=send_now
            )
        else:
            transport = channel(settings.send_timeout, self._gone)
        self.transport = transport
        self.delivery = Delivery(transport, codec, host.backend.history, settings, host.metrics)
        self.conn_id = secrets.token_hex(8)
        self.state = State.NEW
        self.claims: Claims | None = None
        self.liveness = Liveness(
            interval=settings.ping_interval,
            rate=settings.max_frame_rate,
            ping=transport.ping,
            ping_frame=_PINGS[codec.name],
            close=self.close,
        )
        self._stop: Disconnect | None = None
        self._main: asyncio.Task[None] | None = None
        self._conn: Connection | None = None
        self._subscription: Subscription | None = None
        self._unread: dict[str, int] | None = None

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
            main = self._main
            if main is not None and self.state is State.OPEN and main is not asyncio.current_task():
                main.cancel()

    async def run(self) -> None:
        """Accept the upgrade, serve the connection, and always leave it closed and forgotten:
        unregistered, out of presence, its subscription closed, no task left behind."""
        bind_connection(self.conn_id)  # every line logged for this socket carries it (hub.logs)
        try:
            await self.transport.accept(self._subprotocol)
        except PeerGone:
            self._set_state(State.CLOSED)
            return
        self._set_state(State.AUTHENTICATING)
        host, metrics = self.host, self.host.metrics
        try:  # one coroutine frame for the whole life: idle sockets are many (no helper frames)
            try:
                subscription = await self._open()
                metrics.connects.inc()
                metrics.connections.inc()
                try:
                    host.register(self)
                    await self._serve(subscription)  # returns only by raising
                finally:
                    host.unregister(self)
                    metrics.connections.dec()
            except Exception as error:
                outcome = self._ending(error)
            finally:
                self._set_state(State.CLOSED)
                subscription_, conn, self._subscription, self._conn = self._subscription, self._conn, None, None
                await release(host.backend, subscription_, conn, host.settings.backend_timeout)
            log.debug("closing: %s %s", outcome.code if outcome.code is not None else "(peer gone)", outcome.message)
            if outcome.code is not None:
                await self._close(outcome.code, outcome.message)
        finally:
            await self.transport.discard()

    def _ending(self, error: BaseException) -> Disconnect:
        """The close an error ends the session with: the one place where one becomes a code."""
        if isinstance(error, Disconnect):
            return error
        if isinstance(error, PeerGone):
            return Disconnect(None)
        if isinstance(error, TooSlow):
            return Disconnect(CloseCode.TRY_AGAIN_LATER, f"too slow: {error}")
        if isinstance(error, BackendTimeout):
            log.warning("session %s: %s", self.conn_id, error)
            return Disconnect(CloseCode.TRY_AGAIN_LATER, f"{error}; retry later")
        if isinstance(error, BackendUnavailable | OSError):  # the socket's own errors are PeerGone already
            log.warning("session %s: %s", self.conn_id, error)
            return Disconnect(CloseCode.TRY_AGAIN_LATER, "the hub cannot serve this connection now; retry later")
        log.error("session %s failed", self.conn_id, exc_info=error)
        self.host.metrics.errors.labels(where="session").inc()
        return Disconnect(CloseCode.INTERNAL_ERROR, "internal error")

    # --------------------------------------------------------------- the steps

    async def _open(self) -> Subscription:
        """The connect frame, the token, presence, the live subscription and recovery (§5)."""
        settings = self.host.settings
        connect = await self._await_connect()
        self.claims = claims = self._verify(connect.token)
        bind_connection(self.conn_id, claims.user)
        for topic in connect.since:
            if topic not in claims.topics:
                raise Disconnect(CloseCode.FORBIDDEN, f"topic {topic!r} in 'since' is not granted by the token")
        self._conn = Connection(self.conn_id, claims.user, settings.replica_id)
        backend = self.host.backend
        keys = subscription_keys(backend.reads, claims.user, claims.topics)
        async with turns(backend, settings.connect_concurrency, settings.auth_timeout).turn():  # a burst queues
            added, self._subscription = await acquire(backend, self._conn, keys, settings.backend_timeout)
        if added > settings.max_connections_per_user:
            raise Disconnect(
                CloseCode.LIMIT, f"user has {added - 1} connections, the limit is {settings.max_connections_per_user}"
            )
        self._unread = await unread_counts(backend.reads, claims.user, claims.topics, settings.backend_timeout)
        await self.delivery.recover(claims.topics, connect.since, self._greeting)
        self._set_state(State.OPEN)
        return self._subscription

    async def _await_connect(self) -> Connect:
        timeout = self.host.settings.auth_timeout
        try:
            async with asyncio.timeout(timeout):
                frame = self._parse(await self.transport.receive())
        except TimeoutError:
            raise Disconnect(CloseCode.BAD_TOKEN, f"expected a connect frame within {timeout:g} s") from None
        if not isinstance(frame, Connect):
            raise Disconnect(CloseCode.BAD_TOKEN, f"expected a connect frame first, got {type(frame).__name__.lower()}")
        return frame

    def _verify(self, token: str) -> Claims:
        try:
            return self.host.auth.verify(token)
        except TokenError as exc:
            self.host.metrics.auth_failures.labels(code=str(int(exc.code))).inc()
            raise Disconnect(exc.code, str(exc)) from None

    def _greeting(self, recovered: bool, offsets: dict[str, str]) -> Wire:
        """The ``connected`` frame (§3, §8)."""
        settings, claims = self.host.settings, self.claims
        assert claims is not None
        frame = connected_frame(
            conn_id=self.conn_id,
            user=claims.user,
            topics=list(claims.topics),
            replica=settings.replica_id,
            ping_interval=settings.ping_interval,
            recovered=recovered,
            offsets=offsets,
            unread=self._unread,
        )
        return self.codec.encode(frame)

    # ----------------------------------------------------------------- open

    async def _serve(self, subscription: Subscription) -> NoReturn:
        """Pump live notifications in this task while another reads, until the first reason
        to stop, raised as Disconnect."""
        main = self._main = asyncio.current_task()
        assert main is not None
        if self._stop is not None:  # closed (a drain) before it could start serving
            raise self._stop
        reader = asyncio.get_running_loop().create_task(self._reader())
        reader.add_done_callback(self._reader_done)
        assert self.claims is not None
        self.liveness.start(self.claims.exp)
        try:
            await self.delivery.pump(subscription)
        except asyncio.CancelledError:
            if self._stop is None or main.uncancel() > 0:
                raise  # cancelled from outside (server shutdown), not by close()
        except Exception as error:
            ending = self._ending(error)
            self.close(ending.code, ending.message)  # from this task: no self-cancel
        finally:
            self.liveness.stop()
            reader.cancel()
            await asyncio.wait((reader,))
        assert self._stop is not None
        raise self._stop

    def _gone(self) -> None:
        """The transport found the peer gone while writing."""
        self.close(None)

    # ------------------------------------------------------------- the reader

    async def _reader(self) -> None:
        while True:
            frame = self._parse(await self.transport.receive())
            if isinstance(frame, Pong):
                continue
            if isinstance(frame, Read):
                await self._read(frame)
                continue
            if isinstance(frame, Connect):
                raise Disconnect(CloseCode.PROTOCOL_ERROR, "expected refresh or pong, got a second connect")
            self._refresh(self._verify(frame.token))

    async def _read(self, frame: Read) -> None:
        """A ``read`` frame (§9): marked in the store, told to every socket of the user."""
        claims = self.claims
        assert claims is not None
        reads, timeout = self.host.backend.reads, self.host.settings.backend_timeout
        try:
            await mark_read(reads, claims.user, claims.topics, frame, timeout)
        except ProtocolError as exc:
            raise Disconnect(exc.code, str(exc)) from None

    def _refresh(self, claims: Claims) -> None:
        """Take a refreshed token: same user, and no granted topic taken away (§8: 4003)."""
        current = self.claims
        assert current is not None
        if claims.user != current.user:
            raise Disconnect(CloseCode.BAD_TOKEN, "expected a refresh token for the same user")
        revoked = [topic for topic in current.topics if topic not in claims.topics]
        if revoked:
            raise Disconnect(
                CloseCode.FORBIDDEN, f"the refreshed token no longer grants {revoked[0]!r}; reconnect with it"
            )
        self.claims = Claims(current.user, current.topics, claims.exp)
        self.liveness.renew(claims.exp)

    def _reader_done(self, reader: asyncio.Task[None]) -> None:
        if reader.cancelled():
            return
        error = reader.exception()
        if error is not None:
            ending = self._ending(error)
            self.close(ending.code, ending.message)

    def _parse(self, data: Wire) -> ClientFrame:
        """A client frame, within the frame rate (4008) and the protocol (4002 and the like)."""
        if not self.liveness.heard():
            raise Disconnect(CloseCode.LIMIT, f"more than {self.host.settings.max_frame_rate:g} frames per second")
        try:
            return parse_client_frame(self.codec, data)
        except ProtocolError as exc:
            raise Disconnect(exc.code, str(exc)) from None

    async def _close(self, code: CloseCode, message: str) -> None:
        self.host.metrics.closes.labels(code=str(int(code))).inc()
        reason = message.encode(errors="replace")[:123].decode(errors="ignore")  # a close reason fits 123 bytes
        await self.transport.close(int(code), reason, self.codec.encode(error_frame(code, message)))
