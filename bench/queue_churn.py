"""``python -m bench.queue_churn``: what one socket's queue costs RabbitMQ to create and remove,
on one node and on a 3-node cluster (RabbitMQ 3.10, Mnesia).

Each cycle is what a socket's life costs the broker on the distributed backend: declare
an exclusive, server-named queue (with a length bound), bind it to a topic exchange,
consume, then cancel and delete it. ``--cycles`` cycles run ``--concurrency`` at a time
over one connection; the CPU time of every node's processes (/proc) is read around the
run. On 3.x the queue's record is written to Mnesia on every node of the cluster (exclusive
queues included), so the cluster row shows what metadata replication adds. RabbitMQ 4.x
stores it in Khepri (Raft: a majority must log each change) instead; not measurable here
(3.10 only), see docs/scaling.md. Private nodes only (testkit), stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aio_pika

from testkit.rabbit_cluster import start_cluster
from testkit.rabbit_node import RabbitNode, start_nodes


async def _churn(url: str, cycles: int, concurrency: int) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channels = [await connection.channel() for _ in range(8)]
        exchange = await channels[0].declare_exchange("churn.live", aio_pika.ExchangeType.TOPIC)
        gate = asyncio.Semaphore(concurrency)

        async def cycle(n: int) -> None:
            async with gate:
                channel = channels[n % len(channels)]
                queue = await channel.declare_queue(
                    "", exclusive=True, arguments={"x-max-length": 1000, "x-overflow": "drop-head"}
                )
                await queue.bind(exchange, f"user.{n}")
                tag = await queue.consume(_ignore)
                await queue.cancel(tag)
                await queue.delete(if_unused=False, if_empty=False)

        started = time.monotonic()
        await asyncio.gather(*(cycle(n) for n in range(cycles)))
        return time.monotonic() - started


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.ack()


def _measure(nodes: Sequence[RabbitNode], url: str, cycles: int, concurrency: int) -> tuple[float, float]:
    asyncio.run(_churn(url, 200, concurrency))  # warm-up
    before = sum(node.cpu_seconds() for node in nodes)
    wall = asyncio.run(_churn(url, cycles, concurrency))
    cpu = sum(node.cpu_seconds() for node in nodes) - before
    return cycles / wall, cpu / cycles * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_churn", description=__doc__)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    load = Path("/proc/loadavg").read_text().strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-churn-") as tmp:
        (node,) = start_nodes(Path(tmp) / "single", ["churn"])
        try:
            rows.append(("1 node", *_measure([node], node.amqp_url(), args.cycles, args.concurrency)))
        finally:
            node.stop()
        cluster = start_cluster(Path(tmp) / "cluster", 3)
        try:
            first = cluster.nodes[0]
            rows.append(("3-node cluster", *_measure(cluster.nodes, first.amqp_url(), args.cycles, args.concurrency)))
        finally:
            cluster.stop()
    print(f"Socket-queue churn, {args.cycles} cycles, {args.concurrency} at a time; load before: {load}\n")
    print("| broker | cycles/s | RabbitMQ CPU µs per cycle (all nodes) |")
    print("|---|---:|---:|")
    for name, rate, cpu in rows:
        print(f"| {name} | {rate:,.0f} | {cpu:,.0f} |")


if __name__ == "__main__":
    main()
