"""The docker/ deployment without Docker: N ``hub serve`` processes behind a real HAProxy.

The load balancer runs ``docker/haproxy.cfg.template`` — the very template that
``docker/haproxy.cfg`` (used by compose) is rendered from — with loopback addresses
filled in. Everything listens on 127.0.0.1, each process runs in its own process
group, and ``Cluster.close`` kills every group it started.

By hand::

    python docker/cluster.py up --replicas 3          # embedded backends (each its own)
    HUB_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ HUB_REDIS_URL=redis://127.0.0.1:6379/0 \\
    HUB_JWT_SECRET=... HUB_API_KEY=... python docker/cluster.py up --replicas 3
    python docker/cluster.py render-compose > docker/haproxy.cfg

From tests: ``async with Cluster(3, env) as cluster: ...`` (see tests/test_cluster.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

if __name__ == "__main__":  # run as a script: the repository root holds testkit/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The test-support package; free_port is used here, the others are re-exported for the
# tests that drive this cluster (tests/test_cluster.py, test_drain.py, test_workers.py).
from testkit import ReconnectingClient as Client
from testkit import free_port
from testkit.services import deployment as distributed_env

__all__ = ["Client", "Cluster", "ClusterError", "Replica", "distributed_env", "free_port", "render_lb"]

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "haproxy.cfg.template"
COMPOSE_CFG = HERE / "haproxy.cfg"
#: How compose fills the template: three services on their container port, Docker DNS.
COMPOSE_SERVERS = [("hub1", "hub1:8080"), ("hub2", "hub2:8080"), ("hub3", "hub3:8080")]
COMPOSE_LB = {"bind": "*:8080", "stats_bind": "*:8404", "server_options": "resolvers docker init-addr last,libc,none"}


class ClusterError(RuntimeError):
    """A process of the cluster did not start or stop as expected; the message says which."""


def render_lb(
    servers: Sequence[tuple[str, str]],
    *,
    bind: str,
    stats_bind: str,
    server_options: str = "",
    template: str | None = None,
) -> str:
    """The HAProxy configuration for ``servers`` (name, host:port), from the shared template."""
    text = TEMPLATE.read_text() if template is None else template
    lines = "\n".join(f"    server {name} {address} check" for name, address in servers)
    return (
        text.replace("{{bind}}", bind)
        .replace("{{stats_bind}}", stats_bind)
        .replace("{{server_options}}", server_options)
        .replace("{{servers}}", lines)
    )


def render_compose_lb() -> str:
    """The configuration compose mounts (``docker/haproxy.cfg``)."""
    return render_lb(COMPOSE_SERVERS, **COMPOSE_LB)


def find_haproxy() -> str | None:
    """The haproxy binary (PATH, then /usr/sbin), or None."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


async def _spawn(argv: Sequence[str], env: Mapping[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *argv, env=dict(env), stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True
        )


def _kill_group(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


@dataclass
class Replica:
    """One ``hub serve`` process on a loopback port."""

    name: str
    port: int
    env: dict[str, str]
    log: Path
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    args: tuple[str, ...] = ()  # more `hub serve` flags, e.g. ("--workers", "2")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Start the process (again); does not wait for readiness."""
        if self.running:
            raise ClusterError(f"replica {self.name} is already running")
        self.starts += 1
        with self.log.open("a") as out:
            out.write(f"\n===== start #{self.starts} at {time.strftime('%H:%M:%S')} =====\n")
        argv = [sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self.proc = await _spawn(argv, {**self.env, "HUB_REPLICA_ID": self.name}, self.log)

    async def wait_ready(self, limit: float = 30.0) -> None:
        """Poll ``/readyz`` until 200; raise ClusterError with the log's tail if it dies or times out."""
        deadline = time.monotonic() + limit
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if not self.running:
                    raise ClusterError(f"replica {self.name} exited with {self.returncode()}:\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)  # poll interval
        raise ClusterError(f"replica {self.name} not ready within {limit} s:\n{self.tail()}")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the replica's process (SIGKILL goes to its whole group)."""
        if self.proc is None or self.proc.returncode is not None:
            raise ClusterError(f"replica {self.name} is not running")
        if sig == signal.SIGKILL:
            _kill_group(self.proc)
        else:
            self.proc.send_signal(sig)

    async def wait_exit(self, limit: float) -> int:
        """Wait for the process to end and return its exit status; kill it after ``limit`` s."""
        assert self.proc is not None
        try:
            async with asyncio.timeout(limit):
                return await self.proc.wait()
        except TimeoutError:
            _kill_group(self.proc)
            await self.proc.wait()
            raise ClusterError(f"replica {self.name} did not exit within {limit} s:\n{self.tail()}") from None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def kill(self) -> None:
        """SIGKILL the process group and reap it; idempotent."""
        if self.proc is not None and self.proc.returncode is None:
            _kill_group(self.proc)
            await self.proc.wait()


@dataclass
class Cluster:
    """``replicas`` hub processes (env ``env``) behind HAProxy, all on loopback.

    ``async with`` starts everything and waits until HAProxy sees every replica up;
    leaving kills every process group started, even after a failure.
    """

    replicas: int
    env: Mapping[str, str]
    workdir: Path | None = None
    members: list[Replica] = field(default_factory=list)
    lb_port: int = 0
    stats_port: int = 0
    lb: asyncio.subprocess.Process | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The load balancer's HTTP URL (``ws://`` + the same for sockets)."""
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.lb_port}/ws"

    async def __aenter__(self) -> Cluster:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        haproxy = find_haproxy()
        if haproxy is None:
            raise ClusterError("haproxy is not installed (Debian: apt-get install -y haproxy)")
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hub-cluster-")
            self.workdir = Path(self._tmp.name)
        base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env = {**base, **self.env, "PYTHONUNBUFFERED": "1"}
        self.members = [
            Replica(f"hub{i + 1}", free_port(), env, self.workdir / f"hub{i + 1}.log") for i in range(self.replicas)
        ]
        for replica in self.members:
            await replica.start()
        await asyncio.gather(*(replica.wait_ready() for replica in self.members))
        self.lb_port, self.stats_port = free_port(), free_port()
        config = render_lb(
            [(r.name, f"127.0.0.1:{r.port}") for r in self.members],
            bind=f"127.0.0.1:{self.lb_port}",
            stats_bind=f"127.0.0.1:{self.stats_port}",
        )
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(config)
        self.lb = await _spawn([haproxy, "-db", "-f", str(cfg)], os.environ, self.workdir / "haproxy.log")
        await self.wait_lb({r.name: "UP" for r in self.members})

    async def lb_status(self) -> dict[str, str]:
        """HAProxy's view of each replica: name → ``UP``, ``DOWN``, ``UP 1/2``, …"""
        async with httpx.AsyncClient(timeout=1.0) as client:
            response = await client.get(f"http://127.0.0.1:{self.stats_port}/stats;csv")
        rows = csv.DictReader(io.StringIO(response.text.lstrip("# ")))
        return {row["svname"]: row["status"] for row in rows if row["pxname"] == "hubs" and row["svname"] != "BACKEND"}

    async def wait_lb(self, expected: Mapping[str, str], limit: float = 15.0) -> float:
        """Poll the LB until each named replica has the expected status; return the seconds it took."""
        start = time.monotonic()
        status: dict[str, str] = {}
        while time.monotonic() - start < limit:
            if self.lb is None or self.lb.returncode is not None:
                raise ClusterError(f"haproxy exited:\n{self.lb_log()}")
            with contextlib.suppress(httpx.HTTPError):
                status = await self.lb_status()
                if all(status.get(name) == want for name, want in expected.items()):
                    return time.monotonic() - start
            await asyncio.sleep(0.1)  # poll interval
        raise ClusterError(f"expected LB status {dict(expected)} within {limit} s, got {status}\n{self.lb_log()}")

    def lb_log(self) -> str:
        assert self.workdir is not None
        with contextlib.suppress(OSError):
            return "\n".join((self.workdir / "haproxy.log").read_text(errors="replace").splitlines()[-30:])
        return ""

    def replica(self, name: str) -> Replica:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(f"expected one of {[m.name for m in self.members]}, got {name!r}")

    async def restart(self, replica: Replica) -> None:
        """Start a stopped replica again and wait until it is ready and the LB sends to it."""
        await replica.start()
        await replica.wait_ready()
        await self.wait_lb({replica.name: "UP"})

    async def close(self) -> None:
        """Kill every process group this cluster started and reap them; idempotent."""
        for replica in self.members:
            await replica.kill()
        if self.lb is not None and self.lb.returncode is None:
            _kill_group(self.lb)
            await self.lb.wait()
        if self._tmp is not None and not os.environ.get("HUB_CLUSTER_KEEP"):
            self._tmp.cleanup()
            self._tmp = None


async def _up(args: argparse.Namespace) -> int:
    env = {k: v for k, v in os.environ.items() if k.startswith("HUB_")}
    env.setdefault("HUB_DEMO", "1")
    workdir = Path(args.workdir) if args.workdir else None
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Cluster(args.replicas, env, workdir=workdir) as cluster:
        print(f"load balancer: {cluster.url}  (ws: {cluster.ws_url})", flush=True)
        print(f"haproxy stats: http://127.0.0.1:{cluster.stats_port}/stats", flush=True)
        for r in cluster.members:
            print(f"  {r.name}: {r.url}  log {r.log}", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(required=True, metavar="command")
    up = commands.add_parser("up", help="run N replicas + haproxy on loopback until Ctrl-C")
    up.add_argument("--replicas", type=int, default=3)
    up.add_argument("--workdir", help="keep logs and haproxy.cfg here")
    up.set_defaults(run=lambda a: asyncio.run(_up(a)))
    render = commands.add_parser("render-compose", help="print docker/haproxy.cfg as compose uses it")
    render.set_defaults(run=lambda a: print(render_compose_lb(), end="") or 0)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
