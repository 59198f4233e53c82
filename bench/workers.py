"""Load-generator processes: receivers hold sockets, publishers send at a paced rate.

Each worker is a separate OS process (``multiprocessing`` spawn context) driven
over a ``Pipe`` with small command dicts, so the generator's own CPU is spread
over processes and sampled like any other. Every command has a bounded
duration; a worker exits on ``close``, on EOF of its pipe, or when its parent
dies (``PR_SET_PDEATHSIG`` is not portable, so workers poll ``os.getppid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import resource
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection

from bench.clients import KINDS, ClientSpec
from bench.publishers import PublishSpec, open_sender

CTX = mp.get_context("spawn")


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Commands:
    """Runs ``handler`` for each command received on ``conn`` inside the event loop."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        parent = os.getppid()
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), self._readable)

        async def watch_parent() -> None:
            while os.getppid() == parent:  # noqa: ASYNC110 - no event for "parent died"
                await asyncio.sleep(1)
            self.queue.put_nowait(None)

        self._watch = loop.create_task(watch_parent())

    def _readable(self) -> None:
        try:
            self.queue.put_nowait(self.conn.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.queue.put_nowait(None)


# ------------------------------------------------------------------------- receivers


@dataclass(eq=False)
class _Sock:
    user: str
    ws: ClientConnection | None = None
    task: asyncio.Task[None] | None = None
    seen: set[tuple[int, int]] = field(default_factory=set)
    received: int = 0
    first_ns: int = 0


class Receiver:
    """Holds sockets for a list of users and records what arrives on them."""

    def __init__(self, spec: ClientSpec) -> None:
        self.spec = spec
        self.client = KINDS[spec.kind]
        self.socks: list[_Sock] = []
        self.run = -1
        self.lat = array("d")
        self.stale = 0
        self.drops = 0
        self.storming = False

    async def _read(self, sock: _Sock) -> None:
        ws = sock.ws
        assert ws is not None
        try:
            async for frame in ws:
                now = time.time_ns()
                payload = await self.client.decode(ws, frame)
                if payload is None:
                    continue
                if payload.get("r") != self.run:
                    self.stale += 1
                    continue
                sock.received += 1
                key = (int(payload["p"]), int(payload["s"]))
                if key in sock.seen:
                    continue
                sock.seen.add(key)
                if not sock.first_ns:
                    sock.first_ns = now
                self.lat.append((now - int(payload["t"])) / 1e6)
        except Exception:
            pass
        if not self.storming:
            self.drops += 1
        sock.ws = None

    async def _open(self, sock: _Sock, gate: asyncio.Semaphore, errors: Counter[str], tries: int) -> bool:
        async with gate:
            for _attempt in range(tries):
                try:
                    sock.ws = await asyncio.wait_for(self.client.open(self.spec, sock.user), 30)
                    sock.task = asyncio.create_task(self._read(sock))
                    return True
                except Exception as exc:
                    errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                    await asyncio.sleep(0.2)
        return False

    async def connect(self, users: list[str], concurrency: int, tries: int = 3) -> dict[str, Any]:
        """Open one socket per entry of ``users``, each tried up to ``tries`` times (0.2 s apart,
        as a client retries a 1013); report successes and timing."""
        gate = asyncio.Semaphore(concurrency)
        errors: Counter[str] = Counter()
        socks = [_Sock(u) for u in users]
        self.socks.extend(socks)
        t0 = time.time_ns()
        ok = await asyncio.gather(*(self._open(s, gate, errors, tries) for s in socks))
        t1 = time.time_ns()
        return {"ok": sum(ok), "failed": len(ok) - sum(ok), "t0": t0, "t1": t1, "errors": dict(errors)}

    async def storm(self, concurrency: int) -> dict[str, Any]:
        """Abort every socket at once (no close handshake), then reconnect them all."""
        self.storming = True
        t_drop = time.time_ns()
        for sock in self.socks:
            if sock.ws is not None:
                sock.ws.transport.abort()
        await asyncio.gather(*(s.task for s in self.socks if s.task), return_exceptions=True)
        self.storming = False
        gate = asyncio.Semaphore(concurrency)
        errors: Counter[str] = Counter()
        ok = await asyncio.gather(*(self._open(s, gate, errors, 3) for s in self.socks))
        return {
            "ok": sum(ok),
            "failed": len(ok) - sum(ok),
            "t_drop": t_drop,
            "t_all": time.time_ns(),
            "errors": dict(errors),
        }

    def reset(self, run: int) -> None:
        """Start counting payloads of ``run``; older runs count as stale."""
        self.run = run
        self.lat = array("d")
        self.stale = 0
        for sock in self.socks:
            sock.seen.clear()
            sock.received = 0
            sock.first_ns = 0

    def stats(self) -> dict[str, Any]:
        """Everything recorded since the last ``reset``."""
        return {
            "lat": self.lat.tobytes(),
            "unique": [(s.user, len(s.seen)) for s in self.socks],
            "received": sum(s.received for s in self.socks),
            "stale": self.stale,
            "drops": self.drops,
            "open": sum(1 for s in self.socks if s.ws is not None),
            "with_msg": sum(1 for s in self.socks if s.first_ns),
            "first_ns_max": max((s.first_ns for s in self.socks), default=0),
        }

    async def close(self) -> None:
        self.storming = True
        for sock in self.socks:
            if sock.ws is not None:
                sock.ws.transport.abort()
        await asyncio.gather(*(s.task for s in self.socks if s.task), return_exceptions=True)
        self.socks.clear()


async def _receiver_loop(conn: Connection, spec: ClientSpec) -> None:
    commands = _Commands(conn)
    receiver = Receiver(spec)
    while (cmd := await commands.queue.get()) is not None:
        op = cmd["op"]
        reply: Any = None
        if op == "connect":
            reply = await receiver.connect(cmd["users"], cmd["concurrency"], cmd.get("tries", 3))
        elif op == "storm":
            reply = await receiver.storm(cmd["concurrency"])
        elif op == "reset":  # a step begins: no collection pauses this process until its stats
            receiver.reset(cmd["run"])
            gc.collect()
            gc.disable()
        elif op == "count":
            reply = sum(len(s.seen) for s in receiver.socks)
        elif op == "stats":  # the step is over: collect what it left
            reply = receiver.stats()
            gc.enable()
        elif op == "close":
            await receiver.close()
            conn.send(None)
            break
        conn.send(reply)
    await receiver.close()


def receiver_main(conn: Connection, spec: ClientSpec) -> None:
    """Process entry point of a receiver."""
    _raise_nofile()
    asyncio.run(_receiver_loop(conn, spec))


# ------------------------------------------------------------------------ publishers


async def _publish_step(sender: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    """Send ``rate x duration`` payloads round-robin over ``users``, paced every ~2 ms.

    At most ``inflight`` sends are outstanding; when the target can't keep up the
    achieved rate drops below the asked one and the reply says so.
    """
    users: list[str] = cmd["users"]
    rate: float = cmd["rate"]
    total = round(rate * cmd["duration"])
    run, pub = cmd["run"], cmd["pub"]
    per_user = [0] * len(users)
    gate = asyncio.Semaphore(cmd.get("inflight", 512))
    errors: list[str] = []
    failed = 0
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, seq: int) -> None:
        nonlocal failed
        try:
            await sender.send(users[i], {"r": run, "p": pub, "s": seq, "t": time.time_ns()})
            per_user[i] += 1
        except Exception as exc:
            failed += 1
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
        finally:
            gate.release()

    start = time.perf_counter()
    deadline = start + cmd["duration"] * 3 + 5
    seq = 0
    while seq < total and time.perf_counter() < deadline:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while seq < due:
            await gate.acquire()
            task = asyncio.create_task(one(seq % len(users), seq))
            pending.add(task)
            task.add_done_callback(pending.discard)
            seq += 1
        await asyncio.sleep(0.002)
    if pending:
        await asyncio.wait(pending, timeout=10)
    elapsed = time.perf_counter() - start
    sent = sum(per_user)
    return {
        "sent": sent,
        "per_user": per_user,
        "elapsed": elapsed,
        "failed": failed,
        "achieved": sent / max(elapsed, cmd["duration"]),
        "errors": errors,
    }


async def _publisher_loop(conn: Connection, spec: PublishSpec) -> None:
    commands = _Commands(conn)
    sender = await open_sender(spec)
    conn.send({"ready": True})
    try:
        while (cmd := await commands.queue.get()) is not None:
            if cmd["op"] == "close":
                conn.send(None)
                break
            conn.send(await _publish_step(sender, cmd))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sender.close(), 5)


def publisher_main(conn: Connection, spec: PublishSpec) -> None:
    """Process entry point of a publisher."""
    asyncio.run(_publisher_loop(conn, spec))


# ------------------------------------------------------------------- parent handles


class Worker:
    """Parent-side handle: start a worker process and exchange commands with it."""

    def __init__(self, target: Any, spec: Any) -> None:
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=target, args=(child, spec), daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def send(self, cmd: dict[str, Any]) -> None:
        self.conn.send(cmd)

    def recv(self, timeout: float) -> Any:
        """Wait at most ``timeout`` s for the reply; raise TimeoutError if none comes."""
        if not self.conn.poll(timeout):
            raise TimeoutError(f"worker {self.pid}: no reply within {timeout:.0f} s")
        return self.conn.recv()

    def call(self, cmd: dict[str, Any], timeout: float) -> Any:
        self.send(cmd)
        return self.recv(timeout)

    def stop(self) -> None:
        """Ask the worker to close; terminate, then kill, if it doesn't exit in time."""
        with contextlib.suppress(Exception):
            self.call({"op": "close"}, 10)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(3)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(3)
        self.conn.close()


def refusals(replies: list[dict[str, Any]]) -> dict[str, int]:
    """The receivers' failed connect attempts (``connect``, ``storm``) summed by error text."""
    total: Counter[str] = Counter()
    for reply in replies:
        total.update(reply["errors"])
    return dict(total.most_common())
