"""``python -m bench.priority``: what a priority queue costs RabbitMQ, in CPU per message.

Starts a private RabbitMQ node (testkit.rabbit_node: its own ports and data, nothing
shared) and moves the same messages through a durable queue shaped like ``hub.ingest``
(persistent messages, publisher confirms, prefetch 512, multiple acks), once per
variant: a classic queue, a queue with ``x-max-priority`` whose messages carry no
priority, and one whose messages carry priorities 0-9. Two shapes: ``flow`` (the
consumer keeps up, the queue stays short: the hub's normal day) and ``backlog``
(everything is published first, then drained: after an outage). The node's CPU time
(user + system of its processes, from /proc) is read around each phase; each cell is
the median of ``--runs``. Writes a markdown table to stdout (docs/operations.md quotes it).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika

from testkit.rabbit_node import RabbitNode, start_nodes

BODY = b'{"text":"Your order 1234 shipped","url":"https://shop.example/orders/1234","kind":"shipping"}'
PREFETCH = 512
WINDOW = 1000  # confirms in flight while publishing

VARIANTS: dict[str, tuple[int | None, bool]] = {
    "classic": (None, False),
    "x-max-priority 9, no priority set": (9, False),
    "x-max-priority 9, priorities 0-9": (9, True),
}


async def _publish(channel: aio_pika.abc.AbstractChannel, queue: str, count: int, priorities: bool) -> None:
    exchange = channel.default_exchange
    pending: list[asyncio.Future[object]] = []
    for n in range(count):
        message = aio_pika.Message(
            BODY,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=f"m{n}",
            priority=random.randint(0, 9) if priorities else None,
        )
        pending.append(asyncio.ensure_future(exchange.publish(message, routing_key=queue)))
        if len(pending) >= WINDOW:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def _consume(channel: aio_pika.abc.AbstractChannel, queue: aio_pika.abc.AbstractQueue, count: int) -> None:
    done = asyncio.Event()
    seen = 0
    batch: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal seen
        seen += 1
        batch.append(message)
        if len(batch) >= PREFETCH // 2 or seen == count:
            last = batch[-1]
            batch.clear()
            await last.ack(multiple=True)
        if seen == count:
            done.set()

    tag = await queue.consume(on_message)
    await done.wait()
    await queue.cancel(tag)


async def _run(node: RabbitNode, variant: str, shape: str, count: int) -> float:
    max_priority, priorities = VARIANTS[variant]
    connection = await aio_pika.connect(node.amqp_url())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=PREFETCH)
        name = f"bench.{int(time.time() * 1000)}"
        arguments: dict[str, Any] = {"x-max-priority": max_priority} if max_priority is not None else {}
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        before, started = node.cpu_seconds(), time.monotonic()
        if shape == "backlog":
            await _publish(channel, name, count, priorities)
            await _consume(channel, queue, count)
        else:
            await asyncio.gather(_publish(channel, name, count, priorities), _consume(channel, queue, count))
        used = node.cpu_seconds() - before - IDLE_RATE * (time.monotonic() - started)
        await queue.delete(if_unused=False, if_empty=False)
    return used


IDLE_RATE = 0.0  # CPU seconds per second the idle node burns; measured first, subtracted


async def _idle_rate(node: RabbitNode, seconds: float = 5.0) -> float:
    before = node.cpu_seconds()
    await asyncio.sleep(seconds)  # measuring the idle node over a fixed window
    return (node.cpu_seconds() - before) / seconds


async def _main(count: int, runs: int) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-priority-") as base:
        (node,) = await asyncio.to_thread(start_nodes, Path(base), ["bench"])
        try:
            global IDLE_RATE
            IDLE_RATE = await _idle_rate(node)
            results: dict[tuple[str, str], list[float]] = {}
            for _ in range(runs):
                for shape in ("flow", "backlog"):
                    for variant in VARIANTS:  # interleaved, so drift in load hits every variant alike
                        used = await _run(node, variant, shape, count)
                        results.setdefault((variant, shape), []).append(used)
        finally:
            await asyncio.to_thread(node.stop)
    lines = [
        f"{count} persistent messages per run, median of {runs} runs; RabbitMQ CPU (user + system) per 10k "
        f"messages, the idle node's {IDLE_RATE:.3f} CPU-s/s subtracted",
        "",
        "| queue | flow (consumer keeps up) | backlog (publish all, then drain) |",
        "|---|---|---|",
    ]
    base_flow = statistics.median(results[("classic", "flow")])
    base_backlog = statistics.median(results[("classic", "backlog")])
    for variant in VARIANTS:
        flow = statistics.median(results[(variant, "flow")])
        backlog = statistics.median(results[(variant, "backlog")])
        lines.append(
            f"| {variant} | {flow / count * 1e4:.3f} s ({flow / base_flow - 1:+.0%}) "
            f"| {backlog / count * 1e4:.3f} s ({backlog / base_backlog - 1:+.0%}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.priority", description=__doc__)
    parser.add_argument("--count", type=int, default=50_000, help="messages per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(asyncio.run(_main(args.count, args.runs)))


if __name__ == "__main__":
    main()
