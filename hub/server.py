"""Running a replica: uvicorn configured for the hub, with a drain on SIGTERM (DESIGN.md §7)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from hub.app import create_app
from hub.node import Node
from hub.workers import reuse_port_socket


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, minus what it keeps of the handshake.

    Once the upgrade is accepted, the handshake response and the request headers in
    the scope are never read again; a replica holds tens of thousands of sockets, so
    letting them go saves about 4 KB per socket (bench: memory per idle socket).
    """

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            self.response = None  # type: ignore[assignment]
            self.scope["headers"] = []


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` drains before it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_server(node: Node) -> uvicorn.Server:
    """A uvicorn server for ``node``: frames capped at ``max_frame_size`` (1009 above it),
    no per-message compression (it costs memory per socket and CPU per frame), and no
    protocol-level pings (the hub pings in protocol v1)."""
    settings = node.settings
    config = uvicorn.Config(
        create_app(node=node),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws=LeanWebSocketProtocol,
        ws_max_size=settings.max_frame_size,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_seconds) + 5,
    )
    return _Server(config)


async def serve(node: Node, *, reuse_port: bool = False) -> None:
    """Run until SIGTERM or SIGINT, then drain the sessions and stop.

    The drain happens before uvicorn's own shutdown, so sockets are closed with 1012
    spread over ``HUB_DRAIN_SECONDS`` instead of all at once. With ``reuse_port`` the
    port is bound with ``SO_REUSEPORT`` (``hub serve --workers``).
    """
    server = build_server(node)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        node.draining = True  # readiness turns false before anything else runs
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    sockets = [reuse_port_socket(node.settings.host, node.settings.port)] if reuse_port else None
    serving = asyncio.create_task(server.serve(sockets=sockets))
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
            raise SystemExit(3)  # uvicorn could not start (port taken, backend unreachable)
