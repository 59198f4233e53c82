"""The minimal reference relay: the Python ceiling for AMQP → WebSocket fan-out.

One exclusive queue per process, bound ``user.*`` on a topic exchange, a dict
user → sockets, and a raw ``websockets`` server. No auth, no history, no presence.
Wire protocol: the client's first text frame is ``{"user": "<id>"}``; the relay
answers ``{"type": "connected"}`` and from then on forwards each AMQP body for
``user.<id>`` as one text frame, unchanged.

Usage: ``python -m bench.peers.relay --port P --amqp URL [--exchange notifications]``.
Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import aio_pika
from websockets.asyncio.server import ServerConnection, broadcast, serve

SOCKETS: dict[str, set[ServerConnection]] = {}


async def read_user(ws: ServerConnection) -> str | None:
    """The user named by the socket's first frame; None (the socket closed with 4002) without one."""
    try:
        return str(json.loads(await asyncio.wait_for(ws.recv(), 10))["user"])
    except (TimeoutError, ValueError, KeyError, TypeError):
        await ws.close(4002, 'expected {"user": id}')
        return None


async def handle(ws: ServerConnection) -> None:
    """Register the socket under the user named by its first frame until it closes."""
    user = await read_user(ws)
    if user is None:
        return
    SOCKETS.setdefault(user, set()).add(ws)
    try:
        await ws.send('{"type":"connected"}')
        await ws.wait_closed()
    finally:
        peers = SOCKETS.get(user)
        if peers is not None:
            peers.discard(ws)
            if not peers:
                del SOCKETS[user]


async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """Forward one AMQP body to every socket of the user in its routing key."""
    key = message.routing_key or ""
    peers = SOCKETS.get(key[5:]) if key.startswith("user.") else None
    if peers:
        broadcast(peers, message.body.decode())


async def main(port: int, amqp_url: str, exchange_name: str) -> None:
    """Serve on 127.0.0.1:port until a termination signal arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "user.*")
        await queue.consume(on_message, no_ack=True)
        async with serve(handle, "127.0.0.1", port, ping_interval=None, compression=None, max_queue=None):
            await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--amqp", required=True)
    parser.add_argument("--exchange", default="notifications")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's loop")
    args = parser.parse_args()
    runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(main(args.port, args.amqp, args.exchange))
