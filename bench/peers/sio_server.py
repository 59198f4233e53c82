"""python-socketio peer: an ASGI Socket.IO server with ``AsyncAioPikaManager``.

Clients connect to namespace ``/`` with auth ``{"user": "<id>"}`` and join the
room named after the user. Publishers use a write-only ``AsyncAioPikaManager``
on the same AMQP URL and ``emit("n", data, room=user)``.

Usage: ``python -m bench.peers.sio_server --port P --amqp URL``. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio
import uvicorn


def build_app(amqp_url: str) -> Any:
    """Return the ASGI app; the manager listens on the ``socketio`` exchange of amqp_url."""
    mgr = socketio.AsyncAioPikaManager(amqp_url)
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=mgr, cors_allowed_origins="*")

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
        if not isinstance(auth, dict) or "user" not in auth:
            return False
        await sio.enter_room(sid, str(auth["user"]))
        return True

    return socketio.ASGIApp(sio)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--amqp", required=True)
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.amqp),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        backlog=4096,
    )
