"""``python -m bench.live_path``: the hub's own CPU per live notification to a socket, no I/O.

The pipeline benchmark (``python -m bench``) moves by 10-30 % between runs on this box,
more than a change of a few µs per notification in the hub process. This probe runs
the session's real delivery code (``hub.delivery.Delivery`` on a ``hub.transport.Transport``,
fed by the memory broker's subscriptions) in one process with the socket replaced by a
counter, and reports the process CPU per notification, alternating round by round
between a transport with the server's ``send_now`` (direct writes) and one without it,
where every notification wakes the session's pump as before direct writes
(docs/benchmarks.md, sixth round).

Usage: ``python -m bench.live_path [--sockets 1000] [--notifications 60000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from hub.backends.memory import MemoryBroker
from hub.delivery import Delivery
from hub.metrics import Metrics
from hub.protocol import JSON
from hub.settings import Settings
from hub.transport import Transport

#: Publishes between two turns of the event loop: each socket gets at most one per turn,
#: as sockets that each get a notification now and then do.
PER_TURN = 10


async def cpu_per_notification(sockets: int, notifications: int, direct: bool) -> float:
    """µs of this process's CPU per notification written (publish included)."""
    broker = MemoryBroker(None, bound=1000)
    settings, metrics = Settings(), Metrics()
    written = 0
    finished = asyncio.Event()

    def count() -> None:
        nonlocal written
        written += 1
        if written == notifications:
            finished.set()

    async def send(message: Any) -> None:
        count()

    def send_now(message: Any) -> bool:
        count()
        return True

    async def receive() -> Any:
        await asyncio.Event().wait()

    pumps = []
    for n in range(sockets):
        transport = Transport(receive, send, send_timeout=5, send_now=send_now if direct else None)
        delivery = Delivery(transport, JSON, None, settings, metrics)
        pumps.append(asyncio.create_task(delivery.pump(await broker.subscribe([f"user.{n}"]))))
    await asyncio.sleep(0.1)  # every pump waits
    start = time.process_time()
    for n in range(notifications):
        await broker.publish(f"user.{n % sockets}", {"n": n})
        if n % PER_TURN == PER_TURN - 1:
            await asyncio.sleep(0)  # a turn of the loop: the pumps woken meanwhile run
    await finished.wait()
    spent = time.process_time() - start
    for pump in pumps:
        pump.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    return spent / notifications * 1e6


async def main(sockets: int, notifications: int, rounds: int) -> None:
    for round in range(1, rounds + 1):
        for direct in (False, True):
            cost = await cpu_per_notification(sockets, notifications, direct)
            label = "direct writes" if direct else "pump only"
            print(f"round {round}: {label}: {cost:.1f} µs per notification", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.live_path", description=__doc__)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--notifications", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.sockets, args.notifications, args.rounds))
