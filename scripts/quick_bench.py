"""Quick measurement of the distributed backend: connects/s, notifications/s, publish→socket latency.

Starts one ``hub serve`` replica (subprocess) on an isolated vhost and Redis prefix,
opens ``--sockets`` WebSocket clients (one user each), publishes ``--messages``
notifications round-robin over the users through the AMQP publish helper as fast as
confirms allow, and reports throughput and p50/p99 latency (frame ``ts`` → receipt).

    .venv/bin/python scripts/quick_bench.py --sockets 1000 --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from websockets.asyncio.client import connect

from hub.publisher import Publisher
from tests.distributed_env import environment
from tests.harness import API_KEY, SECRET, free_port, make_token


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=0, help="notifications/s to offer (0: as fast as confirms allow)")
    args = parser.parse_args()
    async with environment() as env:
        port = free_port()
        environ = {**os.environ, **env, "HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY, "HUB_LOG_LEVEL": "warning"}
        hub = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--port", str(port)], env=environ)  # noqa: ASYNC220
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(300):
                    try:
                        if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
            latencies: list[float] = []
            received = 0
            done = asyncio.Event()

            async def open_one(i: int):  # type: ignore[no-untyped-def]
                ws = await connect(f"ws://127.0.0.1:{port}/ws", max_queue=None, open_timeout=60)
                await ws.send(json.dumps({"type": "connect", "token": make_token(f"b{i}")}))
                assert json.loads(await ws.recv())["type"] == "connected"
                return ws

            started = time.perf_counter()
            sockets = []
            for first in range(0, args.sockets, 100):  # 100 handshakes in flight at a time
                sockets += await asyncio.gather(*(open_one(i) for i in range(first, min(args.sockets, first + 100))))
            connect_s = time.perf_counter() - started

            async def reader(ws) -> None:  # type: ignore[no-untyped-def]
                nonlocal received
                async for raw in ws:
                    frame = json.loads(raw)
                    if frame["type"] == "notification":
                        latencies.append(time.time() * 1000 - frame["ts"])
                        received += 1
                        if received >= args.messages:
                            done.set()

            readers = [asyncio.create_task(reader(ws)) for ws in sockets]
            async with Publisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
                started = time.perf_counter()
                chunk = 100 if args.rate else 500
                for first in range(0, args.messages, chunk):
                    batch = range(first, min(args.messages, first + chunk))
                    await publisher.publish_many([{"user": f"b{i % args.sockets}", "data": {"n": i}} for i in batch])
                    if args.rate:  # pacing an offered load, not synchronisation
                        await asyncio.sleep(max(0.0, started + (first + chunk) / args.rate - time.perf_counter()))
                publish_s = time.perf_counter() - started
                await asyncio.wait_for(done.wait(), 120)
                total_s = time.perf_counter() - started
            latencies.sort()
            q = statistics.quantiles(latencies, n=100)
            print(
                json.dumps(
                    {
                        "sockets": args.sockets,
                        "connects_per_s": round(args.sockets / connect_s),
                        "messages": args.messages,
                        "publish_per_s": round(args.messages / publish_s),
                        "delivered_per_s": round(args.messages / total_s),
                        "p50_ms": round(q[49], 1),
                        "p99_ms": round(q[98], 1),
                    }
                )
            )
            for task in readers:
                task.cancel()
            for ws in sockets:
                await ws.close()
        finally:
            hub.terminate()
            hub.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
