"""``python -m bench.reads``: what one ``read`` costs (docs/protocol.md §9).

For each backend (``memory``; ``distributed``: two in-process replicas of one deployment on
the shared RabbitMQ and Redis, under private names), one user with ``--tabs`` sockets
split over the replicas and ``--retained`` notifications in history. Then ``--reads``
times a tab sends ``read`` (alternately a single mark and a cursor move) and waits until
every tab got the ``read`` frame. Reported: Redis round trips per read (the store's own
count: one script call), AMQP messages published per read (one, fanned out by RabbitMQ),
``read`` frames delivered per read, the time from sending ``read`` to the last tab's
frame (p50/p95), and the time of ``unread`` (a connect's count) with the cursor at
``0-0`` (``XLEN``) and half-way (entries after it are scanned in Lua).

Figures, not assertions: they vary with the machine's load (print ``uptime`` with them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from hub.backends.redis_reads import RedisReads
from testkit.client import Client
from testkit.hubs import RunningHub, run_hub

USER = "bench"
TOPIC = f"user.{USER}"
#: Frames per second a client may send here, far above what the reads need.
FRAME_RATE = 10_000.0


def _replica_env(hub: RunningHub) -> dict[str, str]:
    s = hub.settings
    return {
        "HUB_EXCHANGE": s.exchange,
        "HUB_LIVE_EXCHANGE": s.live_exchange,
        "HUB_INGEST_QUEUE": s.ingest_queue,
        "HUB_DEAD_LETTER": s.dead_letter,
        "HUB_PRESENCE_EXCHANGE": s.presence_exchange,
        "HUB_REDIS_PREFIX": s.redis_prefix,
    }


async def _read_frame(tab: Client) -> dict[str, Any]:
    while True:
        frame = await tab.recv()
        if frame["type"] == "read":
            return frame


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.2f}"


async def _measure(first: RunningHub, second: RunningHub, tabs: int, retained: int, reads: int) -> dict[str, Any]:
    sockets = [await (first if i % 2 == 0 else second).connect(USER) for i in range(tabs)]
    # every tab reads (and answers pings) while the history fills
    readers = [asyncio.ensure_future(tab.notifications(retained, timeout=600)) for tab in sockets]
    for n in range(retained):
        await first.publish(USER, {"n": n, "text": "Your order shipped"})
    received = await asyncio.gather(*readers)
    offsets = [f["offset"] for f in received[0]]
    store = first.node.backend.reads
    assert store is not None
    stores = {id(h.node.backend): h.node.backend.reads for h in (first, second)}

    def trips() -> int | None:
        counted = [s.round_trips for s in stores.values() if isinstance(s, RedisReads)]
        return sum(counted) if counted else None

    unread_times: dict[str, list[float]] = {"cursor 0-0": [], "cursor half-way": []}
    for _ in range(20):
        started = time.perf_counter()
        await store.unread("nobody", [TOPIC])
        unread_times["cursor 0-0"].append(time.perf_counter() - started)
    await sockets[0].send({"type": "read", "topic": TOPIC, "up_to": offsets[retained // 2]})
    for tab in sockets:
        await _read_frame(tab)
    for _ in range(20):
        started = time.perf_counter()
        await store.unread(USER, [TOPIC])
        unread_times["cursor half-way"].append(time.perf_counter() - started)
    trips_mid = trips()
    spans: list[float] = []
    frames = 0
    for i in range(reads):
        offset = offsets[retained // 2 + 1 + (i % (retained // 2 - 1))]
        frame: dict[str, Any] = {"type": "read", "topic": TOPIC}
        frame.update({"offsets": [offset]} if i % 2 == 0 else {"up_to": offsets[retained // 2]})
        started = time.perf_counter()
        await sockets[i % tabs].send(frame)
        for tab in sockets:
            await _read_frame(tab)
            frames += 1
        spans.append(time.perf_counter() - started)
    trips_after = trips()
    for tab in sockets:
        await tab.close()
    return {
        "round_trips": None if trips_after is None or trips_mid is None else (trips_after - trips_mid) / reads,
        "frames": frames / reads,
        "p50": _ms(spans, 0.5),
        "p95": _ms(spans, 0.95),
        "unread": {k: _ms(v, 0.5) for k, v in unread_times.items()},
    }


async def _run(args: argparse.Namespace) -> None:
    print(f"load: {os.getloadavg()[0]:.2f} (1 min), tabs {args.tabs}, retained {args.retained}, reads {args.reads}\n")
    print(
        "| backend | Redis round trips / read | AMQP publishes / read | `read` frames / read "
        "| read → last tab p50 / p95 (ms) | `unread` p50, cursor 0-0 / half-way (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        # The frame-rate limit (4008) is not what this measures: one tab sends every read.
        async with run_hub(backend, history_size=max(args.retained, 10), max_frame_rate=FRAME_RATE) as first:
            if backend == "memory":
                result = await _measure(first, first, args.tabs, args.retained, args.reads)
                trips, publishes = "0 (in process)", "0 (in process)"
            else:
                second_hub = run_hub(
                    backend, env=_replica_env(first), replica_id="bench-second", max_frame_rate=FRAME_RATE
                )
                async with second_hub as second:
                    result = await _measure(first, second, args.tabs, args.retained, args.reads)
                trips, publishes = f"{result['round_trips']:g}", "1"
            u = result["unread"]
            print(
                f"| {backend} | {trips} | {publishes} | {result['frames']:g} | {result['p50']} / {result['p95']} "
                f"| {u['cursor 0-0']} / {u['cursor half-way']} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reads", description=__doc__)
    parser.add_argument("--backends", default="memory,distributed")
    parser.add_argument("--tabs", type=int, default=4)
    parser.add_argument("--retained", type=int, default=200)
    parser.add_argument("--reads", type=int, default=200)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
