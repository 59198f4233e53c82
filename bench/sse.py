"""SSE against WebSocket: memory per connection and delivery latency (docs/protocol.md §10).

``python -m bench.sse [--connections 1000] [--notifications 300]`` starts one embedded
``hub serve`` per transport (a fresh process each, so the figures do not mix), opens
``--connections`` idle connections (one user each), reads the hub's RSS before and after
(memory per connection), then publishes ``--notifications`` notifications over the HTTP
API, spread over the users at a steady pace, and records for each the time from the
hub's ``ts`` (its arrival) to its receipt by the client (delivery latency, same clock).
The clients are lean asyncio ones (``websockets``; a raw HTTP/1.1 reader for SSE) in
this process. Bounded: every wait has a deadline; the run takes about a minute.
Prints a markdown table and writes ``bench/results/sse-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.procstat import rss_bytes
from testkit.net import free_port
from testkit.tokens import API_KEY, SECRET, make_token
from testkit.waiting import wait_for

RESULTS = Path(__file__).resolve().parent / "results"
Deliver = Callable[[dict[str, Any]], None]


@contextlib.asynccontextmanager
async def hub_process(connections: int) -> AsyncIterator[tuple[str, int]]:
    """An embedded ``hub serve`` on a free port: yields (base URL, pid); killed afterwards."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_JWT_SECRET": SECRET,
        "HUB_API_KEY": API_KEY,
        "HUB_LOG_LEVEL": "warning",
        "HUB_MAX_FRAME_RATE": "1000",
    }
    hub = Path(sys.executable).parent / "hub"
    proc = await asyncio.create_subprocess_exec(
        str(hub),
        *("serve", "--host", "127.0.0.1", "--port", str(port)),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=2) as http:

            async def ready() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get(f"{base}/readyz")).status_code == 200
                return False

            await wait_for(ready, timeout=30, what="the hub to be ready")
        yield base, proc.pid
    finally:
        proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


async def open_ws(base: str, user: str, deliver: Deliver) -> Callable[[], Awaitable[None]]:
    """One WebSocket connection of ``user``; returns its closer."""
    ws: ClientConnection = await connect(base.replace("http", "ws") + "/ws", subprotocols=None, max_queue=None)
    await ws.send(json.dumps({"type": "connect", "token": make_token(user, ttl=3600)}))
    json.loads(await ws.recv())

    async def read() -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                frame = json.loads(message)
                if frame["type"] == "notification":
                    deliver(frame)
                elif frame["type"] == "ping":
                    await ws.send('{"type":"pong"}')

    task = asyncio.create_task(read())

    async def close() -> None:
        await ws.close()
        task.cancel()

    return close


async def open_sse(base: str, user: str, deliver: Deliver, http: httpx.AsyncClient) -> Callable[[], Awaitable[None]]:
    """One SSE stream of ``user`` (a ticket, then a raw HTTP/1.1 GET); returns its closer."""
    answer = await http.post(f"{base}/sse/ticket", headers={"Authorization": f"Bearer {make_token(user, ttl=3600)}"})
    ticket = answer.json()["ticket"]
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
    writer.write(f"GET /sse?ticket={ticket} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"expected 200 from GET /sse, got {status!r}")
    while (await reader.readline()).strip():  # the headers
        pass
    connected = asyncio.get_running_loop().create_future()

    async def read() -> None:
        with contextlib.suppress(Exception):
            while True:
                line = await reader.readline()
                if not line:
                    return
                text = line.decode(errors="replace")
                start = text.find("data: {")
                if start < 0:
                    continue
                frame = json.loads(text[start + 6 :])
                if frame.get("type") == "notification":
                    deliver(frame)
                elif frame.get("type") == "connected" and not connected.done():
                    connected.set_result(None)

    task = asyncio.create_task(read())
    await asyncio.wait_for(connected, 10)

    async def close() -> None:
        writer.close()
        task.cancel()

    return close


async def run(transport: str, connections: int, notifications: int) -> dict[str, Any]:
    latencies: list[float] = []

    def deliver(frame: dict[str, Any]) -> None:
        latencies.append(time.time() * 1000 - frame["ts"])

    async with (
        hub_process(connections) as (base, pid),
        httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=50)) as http,
    ):
        before = rss_bytes(pid)
        closers: list[Callable[[], Awaitable[None]]] = []
        gate = asyncio.Semaphore(50)

        async def one(i: int) -> None:
            async with gate:
                user = f"b{i}"
                opening = open_sse(base, user, deliver, http) if transport == "sse" else open_ws(base, user, deliver)
                closer = await opening
                closers.append(closer)

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(connections))), 300)
        opened = time.monotonic() - started
        await asyncio.sleep(2)  # let the hub settle before reading its RSS (a measurement pause)
        after = rss_bytes(pid)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        for n in range(notifications):
            body = {"user": f"b{n % connections}", "data": {"n": n}}
            await http.post(f"{base}/api/publish", json=body, headers=headers)
            await asyncio.sleep(0.01)  # a steady pace of ~100/s, not a burst
        with contextlib.suppress(AssertionError):  # what did not arrive in 30 s shows as "delivered"
            await wait_for(lambda: len(latencies) >= notifications, timeout=30, what="the deliveries")
        for close in closers:
            await close()
    latencies.sort()
    return {
        "transport": transport,
        "connections": connections,
        "open_seconds": round(opened, 2),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "kib_per_connection": round((after - before) / connections / 1024, 1),
        "delivered": len(latencies),
        "latency_ms_p50": round(statistics.median(latencies), 2) if latencies else None,
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 2) if latencies else None,
        "latency_ms_max": round(latencies[-1], 2) if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sse", description=__doc__)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--notifications", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = [asyncio.run(run(t, args.connections, args.notifications)) for t in ("websocket", "sse")]
    load = os.getloadavg()
    print(f"\nSSE vs WebSocket, {args.connections} connections, load average {load[0]:.2f} {load[1]:.2f}\n")
    print(
        "| transport | open (s) | hub RSS before → after (MiB) | KiB / connection | delivered "
        "| p50 ms | p99 ms | max ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['transport']} | {r['open_seconds']} | {r['rss_before_mib']} → {r['rss_after_mib']} | "
            f"{r['kib_per_connection']} | {r['delivered']}/{args.notifications} | {r['latency_ms_p50']} | "
            f"{r['latency_ms_p99']} | {r['latency_ms_max']} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sse-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps({"loadavg": load, "rows": rows}, indent=2))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
