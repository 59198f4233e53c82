"""``python -m bench.shards``: sequencing throughput and CPU per notification with 1, 2, 4 shards.

Bounded: a private RabbitMQ node with the consistent-hash plugin (testkit.rabbit_node)
and a private redis-server (own port, no persistence), both stopped at the end; the
shared services are not touched. For each setup (replicas, shards) a fresh deployment
(own names, own Redis prefix) is started once (it declares its queues) and stopped;
``--count`` notifications (``USERS`` topics) are published to ``notifications``, and
the replicas (``hub serve`` processes, no socket connected: the cost measured is the
sequencer's, ingest → Redis stream → ``notifications.live``, not fan-out) are started
again and drain that backlog. Every 0.1 s the replicas' ``hub_sequenced_total`` and the
CPU time (/proc) of the hub processes, the RabbitMQ node and redis-server are sampled;
throughput and CPU per notification are taken between 10 % and 90 % sequenced (start-up
and tail left out). Writes a markdown table to stdout and ``bench/results/shards-<stamp>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench.procstat import cpu_seconds
from hub.publisher import Publisher
from testkit.net import free_port
from testkit.rabbit_node import RabbitNode, start_nodes
from testkit.tokens import API_KEY, SECRET

RESULTS = Path(__file__).resolve().parent / "results"
SEQUENCED = re.compile(r"^hub_sequenced_total (\S+)$", re.MULTILINE)
SETUPS = ((1, 1), (1, 2), (1, 4), (2, 2), (2, 4))  # (replicas, shards)
USERS = 1000
BODY = {"text": "Your order 1234 shipped", "url": "https://shop.example/orders/1234", "kind": "shipping"}


@dataclass
class Row:
    replicas: int
    shards: int
    rate: float  # notifications per second, 10 % → 90 %
    hub_us: float  # CPU µs per notification, all replicas
    rabbit_us: float
    redis_us: float


def _redis(base: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=base,
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError("the private redis-server did not answer within 20 s") from None
            time.sleep(0.1)  # a process that starts in milliseconds, with a deadline


async def _sequenced(http: httpx.AsyncClient, ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        try:
            found = SEQUENCED.search((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
        except httpx.HTTPError:
            continue
        total += float(found.group(1)) if found else 0.0
    return total


async def _publish(url: str, exchange: str, count: int) -> None:
    async with Publisher(url, exchange=exchange) as publisher:
        for first in range(0, count, 500):
            items = [
                {"user": f"b{n % USERS}", "data": BODY, "id": f"n{n}"} for n in range(first, min(count, first + 500))
            ]
            await publisher.publish_many(items)


async def _run(node: RabbitNode, redis_port: int, redis_pid: int, replicas: int, shards: int, count: int) -> Row:
    tag = "bench" + uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "HUB_AMQP_URL": node.amqp_url(),
        "HUB_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "HUB_EXCHANGE": f"{tag}.notifications",
        "HUB_LIVE_EXCHANGE": f"{tag}.live",
        "HUB_INGEST_QUEUE": f"{tag}.ingest",
        "HUB_DEAD_LETTER": f"{tag}.dead",
        "HUB_PRESENCE_EXCHANGE": f"{tag}.presence",
        "HUB_REDIS_PREFIX": f"{tag}:",
        "HUB_INGEST_SHARDS": str(shards),
        "HUB_JWT_SECRET": SECRET,
        "HUB_API_KEY": API_KEY,
    }
    ports = [free_port() for _ in range(replicas)]
    async with httpx.AsyncClient(timeout=5) as http:
        # a first start declares the queues; the backlog is published while no replica runs
        procs = _start(env, tag, ports)
        try:
            await _until_held(http, ports, shards)
        finally:
            _stop(procs)
        await _publish(node.amqp_url(), env["HUB_EXCHANGE"], count)
        procs = _start(env, tag, ports)
        try:
            return await _sample(http, node, redis_pid, procs, ports, replicas, shards, count)
        finally:
            _stop(procs)


def _start(env: dict[str, str], tag: str, ports: list[int]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--port", str(port), "--log-level", "warning"],
            env={**env, "HUB_REPLICA_ID": f"{tag}-{i}"},
            stdout=subprocess.DEVNULL,
        )
        for i, port in enumerate(ports)
    ]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)


async def _until_held(http: httpx.AsyncClient, ports: list[int], shards: int) -> None:
    deadline = time.monotonic() + 60
    while await _held(http, ports) < shards:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ports)} replicas did not take {shards} shards within 60 s")
        await asyncio.sleep(0.2)  # polling with a deadline


async def _sample(
    http: httpx.AsyncClient,
    node: RabbitNode,
    redis_pid: int,
    procs: list[subprocess.Popen[bytes]],
    ports: list[int],
    replicas: int,
    shards: int,
    count: int,
) -> Row:
    samples: list[tuple[float, float, float, float, float]] = []  # t, sequenced, hub, rabbit, redis cpu
    deadline = time.monotonic() + 600
    while True:
        done = await _sequenced(http, ports)
        hub = sum(cpu_seconds(p.pid) for p in procs)
        samples.append((time.monotonic(), done, hub, node.cpu_seconds(), cpu_seconds(redis_pid)))
        if done >= count or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)  # the sampling period
    first = next(s for s in samples if s[1] >= 0.1 * count)
    last = next(s for s in samples if s[1] >= 0.9 * count)
    n = last[1] - first[1]
    return Row(
        replicas,
        shards,
        rate=n / (last[0] - first[0]),
        hub_us=(last[2] - first[2]) / n * 1e6,
        rabbit_us=(last[3] - first[3]) / n * 1e6,
        redis_us=(last[4] - first[4]) / n * 1e6,
    )


async def _held(http: httpx.AsyncClient, ports: list[int]) -> int:
    held = 0
    for port in ports:
        try:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.HTTPError:
            continue
        found = re.search(r"^hub_shards_held (\S+)$", text, re.MULTILINE)
        held += int(float(found.group(1))) if found else (1 if "hub_sequenced_total" in text else 0)
    return held


def table(rows: list[Row], count: int, load: str) -> str:
    lines = [
        f"Sequencing {count} notifications ({USERS} topics), no socket connected; load before: {load}",
        "",
        "| replicas | shards | notifications/s | hub CPU µs/notif | RabbitMQ CPU µs/notif | Redis CPU µs/notif |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.replicas} | {r.shards} | {r.rate:,.0f} | {r.hub_us:.0f} | {r.rabbit_us:.0f} | {r.redis_us:.0f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shards", description=__doc__)
    parser.add_argument("--count", type=int, default=20_000, help="notifications per setup")
    args = parser.parse_args(argv)
    load = Path("/proc/loadavg").read_text().strip()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        base = Path(tmp)
        (node,) = start_nodes(base / "rabbit", ["bench"], plugins=["rabbitmq_consistent_hash_exchange"])
        redis_proc, redis_port = _redis(base)
        try:
            for replicas, shards in SETUPS:
                row = asyncio.run(_run(node, redis_port, redis_proc.pid, replicas, shards, args.count))
                print(table([row], args.count, load).splitlines()[-1], flush=True)
                rows.append(row)
        finally:
            redis_proc.terminate()
            redis_proc.wait(30)
            node.stop()
    text = table(rows, args.count, load)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"shards-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text(text)


if __name__ == "__main__":
    main()
