"""RabbitMQ's own ceiling for a socket's queue: declare + bind + consume of one exclusive
queue, and its teardown.

``python -m bench.rabbit_floor [--private] [--n 2000]`` sets up ``n`` queues from one aiormq
client in each of these ways and reports set-ups/s and the broker's CPU µs per set-up
(what the hub can at best reach per connect on this machine, RabbitMQ side), then
cancels every consumer as the hub does when a socket closes (the auto-delete queue goes
with it) and reports the broker's CPU µs per teardown (``teardown_cpu_us``, over the
cancels and one second after them) and per whole life (``lifecycle_cpu_us``: what one
connect costs the broker in the end):

- ``serial``: declare, bind, consume, each waiting for its reply (3 round trips);
- ``pipelined``: declare and bind with ``nowait``, the consume's reply settles all three
  (1 round trip, the hub's way), one set-up at a time;
- ``concurrent-C``: pipelined set-ups, ``C`` in flight over 8 channels (a connect storm);
- ``plain-...``: the same without the hub's queue arguments (max-length, drop-head,
  dead-letter, expiry), to show what they cost.

The queues are deleted (connection closed) between modes.

``--phases`` instead does each step for all ``n`` queues before the next (declare, bind,
consume, unbind and bind to another key, as a spare queue taken by another user is, then
cancel, which deletes the auto-delete queue), 64 in flight over 8 channels, and reports
the broker's CPU µs per queue and the rate of each step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq

from bench import services
from bench.private import private
from bench.procstat import cpu_seconds

EXCHANGE = "notifications.live"
HUB_ARGUMENTS: dict[str, Any] = {
    "x-max-length": 1000,
    "x-overflow": "drop-head",
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": "hub.overflow.floor",
    "x-expires": 60_000,
}


async def _noop(message: Any) -> None:
    return None


async def _setup(channel: aiormq.abc.AbstractChannel, args: dict[str, Any], pipelined: bool) -> str:
    queue = f"floor.{uuid.uuid4().hex}"
    key = f"user.{queue[-8:]}"
    if pipelined:  # no reply to wait for: the consume's reply comes after both
        await channel.queue_declare(queue, exclusive=True, auto_delete=True, arguments=args, nowait=True)
        await channel.queue_bind(queue, EXCHANGE, routing_key=key, nowait=True)
    else:
        await channel.queue_declare(queue, exclusive=True, auto_delete=True, arguments=args)
        await channel.queue_bind(queue, EXCHANGE, routing_key=key)
    await channel.basic_consume(queue, _noop, consumer_tag=queue)
    return queue


async def _mode(url: str, n: int, args: dict[str, Any], pipelined: bool, concurrency: int) -> dict[str, float]:
    connection = await aiormq.connect(url)
    try:
        channels = [await connection.channel() for _ in range(8 if concurrency > 1 else 1)]
        await channels[0].exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> tuple[aiormq.abc.AbstractChannel, str]:
            channel = channels[i % len(channels)]
            async with gate:
                return channel, await _setup(channel, args, pipelined)

        async def cancel(channel: aiormq.abc.AbstractChannel, queue: str) -> None:
            async with gate:
                await channel.basic_cancel(queue)

        cpu0, t0 = _cpu(), time.perf_counter()
        queues = await asyncio.gather(*(one(i) for i in range(n)))
        wall, cpu1 = time.perf_counter() - t0, _cpu()
        await asyncio.gather(*(cancel(channel, queue) for channel, queue in queues))
        await asyncio.sleep(1)  # the queue processes stop and are deleted after their cancel-ok
        cpu2 = _cpu()
    finally:
        await connection.close()
    setup, teardown = (cpu1 - cpu0) / n * 1e6, (cpu2 - cpu1) / n * 1e6
    return {
        "per_s": round(n / wall),
        "rabbit_cpu_us": round(setup),
        "teardown_cpu_us": round(teardown),
        "lifecycle_cpu_us": round(setup + teardown),
        "wall_s": round(wall, 2),
    }


async def _phases(url: str, n: int) -> dict[str, dict[str, int]]:
    """Broker CPU µs per queue and queues/s of each step of a queue's life, done for all
    ``n`` queues before the next step starts."""
    connection = await aiormq.connect(url)
    try:
        channels = [await connection.channel() for _ in range(8)]
        await channels[0].exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
        names = [f"floor.{uuid.uuid4().hex}" for _ in range(n)]
        gate = asyncio.Semaphore(64)

        async def step(call: Callable[[aiormq.abc.AbstractChannel, str], Awaitable[Any]]) -> dict[str, int]:
            async def one(i: int) -> None:
                async with gate:
                    await call(channels[i % len(channels)], names[i])

            cpu0, t0 = _cpu(), time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            wall = time.perf_counter() - t0
            await asyncio.sleep(1)  # a cancelled consumer's queue is deleted after its cancel-ok
            return {"rabbit_cpu_us": round((_cpu() - cpu0) / n * 1e6), "per_s": round(n / wall)}

        return {
            "declare": await step(
                lambda ch, q: ch.queue_declare(q, exclusive=True, auto_delete=True, arguments=HUB_ARGUMENTS)
            ),
            "bind": await step(lambda ch, q: ch.queue_bind(q, EXCHANGE, routing_key=f"user.{q[-8:]}")),
            "consume": await step(lambda ch, q: ch.basic_consume(q, _noop, consumer_tag=q)),
            # what a spare queue taken by another user costs (hub.backends.spare_queues)
            "unbind": await step(lambda ch, q: ch.queue_unbind(q, EXCHANGE, routing_key=f"user.{q[-8:]}")),
            "bind again": await step(lambda ch, q: ch.queue_bind(q, EXCHANGE, routing_key=f"user.{q[:8]}")),
            "cancel+delete": await step(lambda ch, q: ch.basic_cancel(q)),
        }
    finally:
        await connection.close()


def _cpu() -> float:
    total = 0.0
    for pid in services.rabbit_pids():
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


async def _run(url: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, args in (("", HUB_ARGUMENTS), ("plain-", {})):
        out[f"{label}serial"] = await _mode(url, n, args, pipelined=False, concurrency=1)
        out[f"{label}pipelined"] = await _mode(url, n, args, pipelined=True, concurrency=1)
        for c in (8, 64):
            out[f"{label}concurrent-{c}"] = await _mode(url, n, args, pipelined=True, concurrency=c)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rabbit_floor", description=__doc__)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--private", action="store_true", help="on a private RabbitMQ node (bench.private)")
    p.add_argument("--phases", type=int, default=0, metavar="ROUNDS", help="the steps of a queue's life, apart")
    args = p.parse_args(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with private() if args.private else contextlib.nullcontext():
        vhost = f"bench-floor-{os.getpid()}"
        url = services.create_vhost(vhost)
        try:
            if args.phases:
                result: Any = [asyncio.run(_phases(url, args.n)) for _ in range(args.phases)]
            else:
                result = asyncio.run(_run(url, args.n))
        finally:
            services.delete_vhost(vhost)
    after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(json.dumps({"n": args.n, "load_before": load, "load_after": after, "modes": result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
