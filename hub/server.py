"""Running a replica: uvicorn configured for the hub, with a drain on SIGTERM (docs/protocol.md §7)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import struct
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from hub import gc_tuning
from hub.app import create_app
from hub.lean_async import LeanEvent, LeanQueue
from hub.logs import uvicorn_log_config
from hub.node import Node
from hub.startup import StartupError, quiet_libraries, start_node
from hub.tls import server_options
from hub.workers import listening_socket

log = logging.getLogger("hub.server")
#: The WebSocket protocol's own lines: uvicorn's and websockets' per-connection INFO lines
#: ("[accepted]", "connection open", "connection closed") cost a formatted, written line per
#: connect and per close (a reconnect storm writes tens of thousands); they are DEBUG-only
#: here (``build_server``), their warnings and errors still show.
WEBSOCKET_LOG = logging.getLogger("uvicorn.error.websocket")


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, minus what it keeps of the handshake, plus
    a way to drop a connection that will not drain.

    Once the upgrade is accepted, the handshake's request and response and the headers
    in the scope are never read again; a replica holds tens of thousands of sockets, so
    letting them go saves about 7 KB per socket (bench: memory per idle socket), and
    the receive queue and "writable" event are ``hub.lean_async``'s (3.8 KB less).

    A client that stops reading would otherwise keep its connection forever: asyncio's
    graceful close waits for the write buffer to drain. So (hub/transport.py):
    ``{"type": "hub.abort"}`` resets the connection at once, and a close the client
    does not answer within ``close_timeout`` resets it too. And a send marked
    ``"hub.nowait"`` raises BlockingIOError instead of waiting while the write buffer is
    full, so the hub only ever waits on a client in a task made for it.
    """

    #: Seconds the client has to answer the hub's close frame (``build_server`` sets it).
    close_deadline = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's receive queue and "writable" event, without their eager deques (hub.lean_async).
        self.queue = LeanQueue()  # type: ignore[assignment]
        self.writable = LeanEvent()  # type: ignore[assignment]
        self.writable.set()
        self.close_timeout = self.close_deadline
        self.logger = self.conn.logger = WEBSOCKET_LOG

    async def send(self, message: Any) -> None:
        if message["type"] == "hub.abort":
            self.abort()
            return
        if "hub.nowait" in message and not self.writable.is_set():
            raise BlockingIOError("the socket's write buffer is full")
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # websockets' parser keeps the request in a generator frame for the socket's
            # life: its headers are emptied, not merely forgotten here.
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]
            self.scope["headers"] = []
        elif message["type"] == "websocket.close" and self.close_timer is not None:
            self.close_timer.cancel()  # uvicorn's timer closes gracefully: never, if nobody reads
            self.close_timer = self.loop.call_later(self.close_timeout, self.abort)

    async def run_asgi(self) -> None:
        # The session's way to send without a task (hub/transport.py, ``SendNow``).
        extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
        extensions["hub.send_now"] = self.send_now
        await super().run_asgi()

    def send_now(self, message: Any) -> bool:
        """Send a ``websocket.send`` message in the caller's task, as ``send`` would, if the
        socket takes it at once; False (nothing sent) when ``send`` would wait or refuse:
        before the upgrade, after the close, or while the write buffer is full."""
        if (
            self.disconnected
            or not self.handshake_complete
            or self.close_sent
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        data = message.get("bytes")
        try:
            if data is not None:
                self.conn.send_binary(data)
            else:
                self.conn.send_text(message["text"].encode())
        except InvalidState:  # the client's close came first: ``send`` raises ClientDisconnected
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def abort(self) -> None:
        """Drop the TCP connection now, with a reset: nothing buffered is kept or sent."""
        if self.disconnected:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # SO_LINGER 0: close() resets instead of lingering
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


def _websocket_protocol(close_timeout: float) -> type[LeanWebSocketProtocol]:
    class HubWebSocketProtocol(LeanWebSocketProtocol):
        close_deadline = close_timeout

    return HubWebSocketProtocol


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` drains before it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_server(node: Node) -> uvicorn.Server:
    """A uvicorn server for ``node``: frames capped at ``max_frame_size`` (1009 above it),
    no per-message compression (it costs memory per socket and CPU per frame), no
    protocol-level pings (the hub pings in protocol v1), and a close handshake bounded
    by ``send_timeout``."""
    settings = node.settings
    config = uvicorn.Config(
        create_app(node=node),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(settings.log_format),
        ws=_websocket_protocol(settings.send_timeout),
        ws_max_size=settings.max_frame_size,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_seconds) + 5,
        **server_options(settings),
    )
    # After the Config: its logging set-up (dictConfig) resets the levels of uvicorn's child loggers.
    WEBSOCKET_LOG.setLevel(logging.DEBUG if settings.log_level == "debug" else logging.WARNING)
    return _Server(config)


async def serve(node: Node, *, reuse_port: bool = False) -> None:
    """Run until SIGTERM or SIGINT, then drain the sessions and stop.

    Before uvicorn says a word, the port is bound and the backend started (within
    ``HUB_STARTUP_TIMEOUT``); when either fails, StartupError says why in one
    line. The drain happens before uvicorn's own shutdown, so sockets are closed with
    1012 spread over ``HUB_DRAIN_SECONDS`` instead of all at once. With ``reuse_port``
    the port is bound with ``SO_REUSEPORT`` (``hub serve --workers``).
    """
    settings = node.settings
    try:
        sock = listening_socket(settings.host, settings.port, reuse_port=reuse_port)
    except OSError as exc:
        raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    with sock:
        restore_logging = quiet_libraries(settings)
        gc_tuning.tune()
        await start_node(node)
        restore_logging()
        gc_tuning.freeze()  # what start-up made lives as long as the process
        await _serve_started(node, sock)


def run(node: Node, *, reuse_port: bool = False) -> None:
    """``serve`` on a new event loop, for ``hub serve``; raises StartupError when it cannot start.

    Unlike ``asyncio.run``, the exit cannot be held by a task that survives cancellation
    (aio-pika's reconnect loop does, after a start that timed out): leftovers get
    ``HUB_BACKEND_TIMEOUT`` to finish, then the loop closes without them.
    """
    loop = new_event_loop(node.settings.event_loop)
    try:
        loop.run_until_complete(serve(node, reuse_port=reuse_port))
    finally:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=node.settings.backend_timeout))
        loop.run_until_complete(loop.shutdown_asyncgens())
        if all(task.done() for task in leftovers):
            loop.close()
        else:
            # Abandoned on purpose: their cleanup (run when the process collects them) may
            # still schedule callbacks, which needs a loop that is not closed, and their
            # "destroyed but pending" report is expected.
            loop.set_exception_handler(lambda loop, context: log.debug("at exit: %s", context.get("message")))


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new loop of ``kind`` (``HUB_EVENT_LOOP``): asyncio's own, or uvloop (``auto``: when
    installed). uvloop did not cost less per notification in docs/benchmarks.md, so it is
    optional. Raises StartupError for ``uvloop`` when it is not installed."""
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise StartupError("HUB_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def _serve_started(node: Node, sock: socket.socket) -> None:
    server = build_server(node)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        node.draining = True  # readiness turns false before anything else runs
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    waiting = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if waiting in done:
        await node.drain(node.settings.drain_seconds)
        server.should_exit = True
        await serving
    else:
        waiting.cancel()
        serving.result()
        if not server.started:
            await node.close()
            raise StartupError("uvicorn could not start (see its log above)")
