"""The sequencer's cost alone: CPU per batch and per notification, hub against hub.

``python -m bench.sequencer_probe --targets hub-dist-before,hub-dist --rounds 3`` starts a
private RabbitMQ and Redis (``bench.private``), then per round and target a fresh hub with
no socket connected, publishes ``--messages`` notifications over AMQP at ``--rate`` (one
publisher, transient, no confirms, as the latency scenario's), waits until the hub's
``hub_sequenced_total`` has them all, and prints, from the CPU the hub, RabbitMQ and Redis
used meanwhile and ``hub_sequencer_batches_total``: notifications per batch and CPU µs per
notification of each. No socket means no live delivery: what is left is the ingest hop,
the Redis append and the live publish (routed nowhere). The targets alternate within a
round, so a slow minute of the box falls on both; compare them round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from pathlib import Path

from bench import private, services
from bench.connects import profiled
from bench.procstat import cpu_seconds, system_seconds
from bench.publishers import AmqpSender, PublishSpec
from bench.targets import API_KEY, lookup


def _metric(port: int, name: str) -> float:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def _publish(url: str, messages: int, rate: float) -> None:
    sender = await AmqpSender.open(PublishSpec("amqp", url))
    try:
        start = time.monotonic()
        for n in range(messages):
            await sender.send(str(n % 1000), {"s": n, "t": time.time_ns()})
            ahead = start + (n + 1) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing, not synchronisation
    finally:
        await sender.close()


def _one(name: str, messages: int, rate: float, spy_dir: Path | None) -> dict[str, float]:
    target = lookup(name)
    with target.running() as live:
        deadline = time.monotonic() + 30
        while _metric(live.port, "hub_sequencer_batches_total") == 0 and time.monotonic() < deadline:
            asyncio.run(_publish(live.amqp, 1, 100))  # warm up: the sequencer is consuming
            time.sleep(0.2)  # a poll interval with a deadline
        sequenced0 = _metric(live.port, "hub_sequenced_total")
        batches0 = _metric(live.port, "hub_sequencer_batches_total")
        groups = {"hub": live.pids, "rabbitmq": services.rabbit_pids(), "redis": services.redis_pids()}
        out = None
        if spy_dir is not None:
            spy_dir.mkdir(parents=True, exist_ok=True)
            out = spy_dir / f"{name}-{time.strftime('%H%M%S')}.txt"
        with profiled(live.pids, out):
            before = {k: _cpu(v) for k, v in groups.items()}
            system = system_seconds(live.pids[0])
            asyncio.run(_publish(live.amqp, messages, rate))
            deadline = time.monotonic() + 60
            while _metric(live.port, "hub_sequenced_total") - sequenced0 < messages and time.monotonic() < deadline:
                time.sleep(0.05)  # a poll with a deadline
            after = {k: _cpu(v) for k, v in groups.items()}
            system = system_seconds(live.pids[0]) - system
        done = _metric(live.port, "hub_sequenced_total") - sequenced0
        batches = _metric(live.port, "hub_sequencer_batches_total") - batches0
    row = {"sequenced": done, "per_batch": done / batches if batches else 0.0, "batches": batches}
    row["hub_system_us"] = system * 1e6 / max(done, 1)
    for k in groups:
        row[f"{k}_us"] = (after[k] - before[k]) * 1e6 / max(done, 1)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sequencer_probe", description=__doc__)
    p.add_argument("--targets", default="hub-dist")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--py-spy", type=Path, default=None, help="record each hub while it sequences, into this folder")
    args = p.parse_args(argv)
    with private.running():
        for n in range(args.rounds):
            for name in args.targets.split(","):
                row = _one(name, args.messages, args.rate, args.py_spy)
                print(json.dumps({"round": n, "target": name, **row}), flush=True)


if __name__ == "__main__":
    main()
