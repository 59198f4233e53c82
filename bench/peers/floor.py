"""The design's floor: what the hub's design asks of RabbitMQ and Redis, done with as little
Python as we can write.

The minimal relay (``bench.peers.relay``) is the Python ceiling for AMQP → WebSocket; it
has one queue per process. Issue 12's design keeps one exclusive auto-delete queue per
socket, and with history on a second hop through a sequencer (docs/protocol.md §5). This
peer does exactly that and nothing else, so its CPU per notification (its own, RabbitMQ's
and Redis') is what any implementation of the design pays at least on this machine:

- every socket: one exclusive auto-delete queue, consumed without acks on one of 8
  channels, bound to ``user.<id>``; each delivery is written to the socket as it is;
- ``--history off``: the queues bind on the publishers' exchange;
- ``--history on``: a durable ``hub.ingest`` bound ``#`` on the publishers' exchange,
  consumed with acks (prefetch 512). Whatever is buffered is one batch: one Redis script
  call (per notification a dedup ``GET``, an ``XADD`` trimmed ``MAXLEN ~`` and a ``SET`` of
  the dedup key with a TTL), one write of its live publishes to ``notifications.live``
  (publisher confirms, one future), and once confirmed one ``multiple`` ack at most 10 ms
  later. The live body is ``<offset>\\n<payload>``; the socket gets the payload.

Left out, all of which the hub has: tokens, the session protocol, subscribe/recover,
presence, read state, overflow, poison handling and dead letters, redelivery counting,
metrics, drain. The hub's own frame writer, direct dispatch and delayed ack are reused
(``hub.backends``): they are the cheapest client code we have.

Wire protocol as the relay's: the client's first text frame is ``{"user": "<id>"}``, the
answer ``{"type": "connected"}``, then one text frame per notification.

Usage: ``python -m bench.peers.floor --port P --amqp URL [--redis URL] [--history on|off]``.
Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
from collections import deque
from typing import Any

import aiormq
import redis.asyncio as redis
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.peers.relay import read_user
from hub.backends import direct_dispatch
from hub.backends.batch_publish import BatchPublisher
from hub.backends.delayed_ack import DelayedAck

CHANNELS = 8
PREFETCH = 512
INGEST = "hub.ingest"
LIVE = "notifications.live"
HISTORY_SIZE = 1000
DEDUP_TTL_MS = 86_400_000
#: KEYS: stream, dedup key per notification; ARGV: maxlen, ttl, then id, data per notification.
APPEND = """
local maxlen, ttl = ARGV[1], ARGV[2]
local out = {}
for n = 1, #KEYS / 2 do
  local s, d = KEYS[2 * n - 1], KEYS[2 * n]
  local off = redis.call('GET', d)
  if not off then
    off = redis.call('XADD', s, 'MAXLEN', '~', maxlen, '*', 'i', ARGV[1 + 2 * n], 'd', ARGV[2 + 2 * n])
    redis.call('SET', d, off, 'PX', ttl)
  end
  out[n] = off
end
return out
"""


class Floor:
    """Socket queues, and with history on the sequencer (see the module doc)."""

    def __init__(self, amqp: aiormq.abc.AbstractConnection, bind_exchange: str) -> None:
        self._amqp = amqp
        self._bind_exchange = bind_exchange
        self._channels: list[aiormq.abc.AbstractChannel] = []
        self._next = itertools.cycle(range(CHANNELS))
        self._tags = itertools.count()

    async def start(self) -> None:
        self._channels = [await self._amqp.channel() for _ in range(CHANNELS)]

    async def handle(self, ws: ServerConnection) -> None:
        """One socket: its queue lives as long as it does."""
        user = await read_user(ws)
        if user is None:
            return
        channel = self._channels[next(self._next)]
        tag = f"s{next(self._tags)}"
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
        assert declared.queue is not None
        await channel.queue_bind(declared.queue, self._bind_exchange, routing_key=f"user.{user}")
        peers = [ws]

        def deliver(message: DeliveredMessage) -> None:
            body = message.body
            broadcast(peers, body[body.find(b"\n") + 1 :].decode())

        await direct_dispatch.consume(channel, declared.queue, deliver, consumer_tag=tag, no_ack=True)
        try:
            await ws.send('{"type":"connected"}')
            await ws.wait_closed()
        finally:
            direct_dispatch.forget(channel, tag)
            with contextlib.suppress(Exception):  # the queue goes with its consumer (auto-delete)
                await channel.basic_cancel(tag)


class Sequencer:
    """``hub.ingest`` → one Redis script call per batch → ``notifications.live``, ack once confirmed."""

    def __init__(self, amqp: aiormq.abc.AbstractConnection, store: redis.Redis) -> None:
        self._amqp = amqp
        self._redis = store
        self._buffer: deque[DeliveredMessage] = deque()
        self._ready = asyncio.Event()
        self._live = BatchPublisher(LIVE, Basic.Properties(content_type="application/json", delivery_mode=1))
        self._acks = DelayedAck(0.01)
        self._sha = ""

    async def run(self, exchange: str) -> None:
        channel = await self._amqp.channel(publisher_confirms=True)
        assert isinstance(channel, aiormq.Channel)
        await channel.basic_qos(prefetch_count=PREFETCH)
        await channel.queue_declare(INGEST, durable=True)
        await channel.queue_bind(INGEST, exchange, routing_key="#")
        self._sha = str(await self._redis.script_load(APPEND))
        await direct_dispatch.consume(channel, INGEST, self._on_message, consumer_tag="floor-sequencer")
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._buffer:
                batch = list(self._buffer)
                self._buffer.clear()
                await self._process(channel, batch)

    def _on_message(self, message: DeliveredMessage) -> None:
        self._buffer.append(message)
        self._ready.set()

    async def _process(self, channel: aiormq.Channel, batch: list[DeliveredMessage]) -> None:
        keys: list[str] = []
        args: list[Any] = [HISTORY_SIZE, DEDUP_TTL_MS]
        for message in batch:
            topic = message.routing_key or ""
            id = message.header.properties.message_id or str(message.delivery_tag)
            keys += (f"floor:s:{topic}", f"floor:d:{topic}:{id}")
            args += (id, message.body)
        offsets = await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        frames = [
            (message.routing_key or "", bytes(offset) + b"\n" + message.body)
            for message, offset in zip(batch, offsets, strict=True)
        ]
        await (await self._live.publish(channel, frames))
        self._acks.done(batch[-1])


async def main(port: int, amqp_url: str, redis_url: str, exchange: str, history: bool) -> None:
    """Serve on 127.0.0.1:port until a termination signal arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    amqp = await aiormq.connect(amqp_url)
    setup = await amqp.channel()
    await setup.exchange_declare(exchange, exchange_type="topic", durable=True)
    await setup.exchange_declare(LIVE, exchange_type="topic", durable=True)
    floor = Floor(amqp, LIVE if history else exchange)
    await floor.start()
    tasks: list[asyncio.Task[None]] = []
    if history:
        store = redis.Redis.from_url(redis_url)
        tasks.append(asyncio.create_task(Sequencer(amqp, store).run(exchange)))
    try:
        async with serve(floor.handle, "127.0.0.1", port, ping_interval=None, compression=None, max_queue=None):
            await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await amqp.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--amqp", required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--exchange", default="notifications")
    parser.add_argument("--history", choices=("on", "off"), default="off")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.port, args.amqp, args.redis, args.exchange, args.history == "on"))
