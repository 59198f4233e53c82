"""The systems under test, each a small adapter: how to start it, reach it, publish to it.

``TARGETS`` maps a name to a ``Target``. ``Target.running()`` creates the target's
own RabbitMQ vhost / Redis db, starts its server in a new process group, waits
until it listens, yields a ``Live`` handle, and on exit kills the process group
and deletes the vhost and flushes the db — also when the body raised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import services
from bench.clients import ClientSpec
from bench.procstat import descendants
from bench.publishers import PublishSpec

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-secret-bench-secret-bench-secret"
API_KEY = "bench-api-key"
LOGS = ROOT / "bench" / "results" / "logs"


@dataclass(frozen=True)
class Target:
    """One system under test."""

    name: str
    label: str
    client: str  # ClientSpec.kind
    publish: str  # PublishSpec.kind
    vhost: bool = True  # needs its own RabbitMQ vhost
    redis_db: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    server: tuple[str, ...] = ()  # argv; {port} {amqp} {redis} are substituted
    services: tuple[str, ...] = ("rabbitmq",)  # shared services it loads (CPU, memory totals)
    ingest: str | None = None  # the queue every notification passes first (drained before each step)
    before: bool = False  # runs the "before" checkout (``$BENCH_BEFORE``) instead of this one

    def root(self) -> Path:
        """The checkout whose code this target runs."""
        return Path(os.environ.get("BENCH_BEFORE", "")) if self.before else ROOT

    def hub_exe(self) -> Path:
        venv = self.root() / ".venv" / "bin" if self.before else Path(sys.executable).parent
        return venv / "hub"

    def available(self) -> str | None:
        """None if this target can run here, else why not."""
        if self.before and not os.environ.get("BENCH_BEFORE"):
            return "BENCH_BEFORE (a checkout of the code to compare with, with its .venv) is not set"
        if self.client == "hub":
            exe = self.hub_exe()
            if not exe.exists():
                return f"{exe} not installed"
        return None

    @contextlib.contextmanager
    def running(self) -> Iterator[Live]:
        """Start the target with fresh broker state; stop it and clean up on exit."""
        vhost = f"bench-{self.name}"
        amqp = services.create_vhost(vhost) if self.vhost else ""
        redis = ""
        if self.redis_db is not None:
            services.flush_redis_db(self.redis_db)
            redis = f"{services.redis_base()}{self.redis_db}"
        proc: subprocess.Popen[bytes] | None = None
        spy: subprocess.Popen[bytes] | None = None
        try:
            if self.vhost and self.publish == "amqp":
                services.declare_exchange(amqp)
            if self.client == "stomp":
                services.ensure_web_stomp()
                live = Live(self, [], 15674, amqp)
            else:
                port = services.free_port()
                subst = {
                    "port": str(port),
                    "amqp": amqp,
                    "redis": redis,
                    "py": sys.executable,
                    "hub": str(self.hub_exe()),
                }
                argv = [a.format(**subst) for a in self.server]
                env = {**os.environ, **{k: v.format(**subst) for k, v in self.env.items()}}
                LOGS.mkdir(parents=True, exist_ok=True)
                log = (LOGS / f"{self.name}.log").open("ab")
                proc = subprocess.Popen(
                    argv,
                    cwd=self.root(),
                    env=env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    preexec_fn=_raise_nofile,
                )
                log.close()
                _wait_listening(proc, port)
                live = Live(self, descendants(proc.pid), port, amqp)
                spy = _profiler(self.name, live.pids[0])
            yield live
        finally:
            if spy is not None:
                _stop_profiler(spy)
            if proc is not None:
                _kill_group(proc)
            if self.vhost:
                with contextlib.suppress(Exception):
                    services.delete_vhost(vhost)
            if self.redis_db is not None:
                with contextlib.suppress(Exception):
                    services.flush_redis_db(self.redis_db)


@dataclass
class Live:
    """A running target: where receivers and publishers go, and which pids are it."""

    target: Target
    pids: list[int]
    port: int
    amqp: str

    def client_spec(self) -> ClientSpec:
        path = "/ws" if self.target.client in ("hub", "stomp") else "/"
        return ClientSpec(
            self.target.client,
            f"ws://127.0.0.1:{self.port}{path}",
            jwt_secret=JWT_SECRET,
            vhost=f"bench-{self.target.name}",
        )

    def publish_spec(self) -> PublishSpec:
        if self.target.publish == "http":
            return PublishSpec("http", f"http://127.0.0.1:{self.port}", api_key=API_KEY)
        return PublishSpec(self.target.publish, self.amqp)


def _profiler(name: str, pid: int) -> subprocess.Popen[bytes] | None:
    """With ``$BENCH_PYSPY`` (a directory), ``py-spy record`` the target's server for its whole run.

    Collapsed stacks (``<dir>/<target>-<stamp>.txt``; ``python -m bench.flame`` sums them). py-spy
    runs beside the target, not inside its process group, so its own CPU is not the target's.
    """
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return None
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        raise SystemExit(f"BENCH_PYSPY is set but {spy} is missing: {Path(sys.executable).parent}/pip install py-spy")
    Path(out).mkdir(parents=True, exist_ok=True)
    dest = Path(out) / f"{name}-{time.strftime('%H%M%S')}.txt"
    argv = [str(spy), "record", "--nonblocking", "-r", "50", "-f", "raw", "-o", str(dest), "-p", str(pid)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_profiler(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        spy.wait(20)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(5)


def _raise_nofile() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening; see logs")
        try:
            services.wait_port(port, 0.2)
            return
        except TimeoutError:
            continue
    raise TimeoutError(f"server not listening on {port} after {timeout:.0f} s")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it after 5 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


_HUB = ("{hub}", "serve", "--host", "127.0.0.1", "--port", "{port}")
_HUB_ENV = {
    "HUB_JWT_SECRET": JWT_SECRET,
    "HUB_API_KEY": API_KEY,
    "HUB_DRAIN_SECONDS": "1",
    # fan-out puts every subscriber on one user id
    "HUB_MAX_CONNECTIONS_PER_USER": "100000",
}
_DIST_ENV = {**_HUB_ENV, "HUB_AMQP_URL": "{amqp}", "HUB_REDIS_URL": "{redis}"}

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "relay",
            "minimal relay",
            "relay",
            "amqp",
            server=("{py}", "-m", "bench.peers.relay", "--port", "{port}", "--amqp", "{amqp}"),
        ),
        Target(
            "relay-uvloop",
            "minimal relay on uvloop",
            "relay",
            "amqp",
            server=("{py}", "-m", "bench.peers.relay", "--port", "{port}", "--amqp", "{amqp}", "--uvloop"),
        ),
        Target(
            "sio",
            "python-socketio",
            "sio",
            "sio",
            server=("{py}", "-m", "bench.peers.sio_server", "--port", "{port}", "--amqp", "{amqp}"),
        ),
        # The design's floor (bench/peers/floor.py): a queue per socket, and a sequencer with history on.
        Target(
            "floor",
            "design floor (queue per socket)",
            "relay",
            "amqp",
            server=("{py}", "-m", "bench.peers.floor", "--port", "{port}", "--amqp", "{amqp}"),
        ),
        Target(
            "floor-hist",
            "design floor (queue per socket, sequenced into Redis)",
            "relay",
            "amqp",
            redis_db=15,
            services=("rabbitmq", "redis"),
            server=(
                *("{py}", "-m", "bench.peers.floor", "--port", "{port}"),
                *("--amqp", "{amqp}", "--redis", "{redis}", "--history", "on"),
            ),
            ingest="hub.ingest",
        ),
        Target("stomp", "RabbitMQ Web-STOMP", "stomp", "amqp"),
        Target("hub", "hub (embedded)", "hub", "http", vhost=False, server=_HUB, env=_HUB_ENV, services=()),
        Target(
            "hub-dist",
            "hub (distributed, history on)",
            "hub",
            "amqp",
            redis_db=10,
            services=("rabbitmq", "redis"),
            server=_HUB,
            env=_DIST_ENV,
            ingest="hub.ingest",
        ),
        Target(
            "hub-dist-nohist",
            "hub (distributed, history off)",
            "hub",
            "amqp",
            redis_db=11,
            services=("rabbitmq", "redis"),
            server=_HUB,
            env={**_DIST_ENV, "HUB_HISTORY_SIZE": "0"},
            ingest="hub.ingest",
        ),
        # Levers one at a time: this checkout on asyncio's own event loop (no uvloop).
        Target(
            "hub-dist-asyncio",
            "hub on asyncio's loop (distributed, history on)",
            "hub",
            "amqp",
            redis_db=14,
            services=("rabbitmq", "redis"),
            server=_HUB,
            env={**_DIST_ENV, "HUB_EVENT_LOOP": "asyncio"},
            ingest="hub.ingest",
        ),
        # The same two, running the code of another checkout ($BENCH_BEFORE): before/after in one run.
        Target(
            "hub-dist-before",
            "hub before (distributed, history on)",
            "hub",
            "amqp",
            redis_db=12,
            services=("rabbitmq", "redis"),
            server=_HUB,
            env=_DIST_ENV,
            ingest="hub.ingest",
            before=True,
        ),
        Target(
            "hub-dist-nohist-before",
            "hub before (distributed, history off)",
            "hub",
            "amqp",
            redis_db=13,
            services=("rabbitmq", "redis"),
            server=_HUB,
            env={**_DIST_ENV, "HUB_HISTORY_SIZE": "0"},
            ingest="hub.ingest",
            before=True,
        ),
    )
}
PEERS = ("relay", "sio", "stomp")


def lookup(name: str) -> Target:
    """A target by name; ``<target>@KEY=VALUE[@KEY=VALUE…]`` is that target with its server's
    environment changed (a lever measured one at a time: ``hub-dist@HUB_SEQUENCER_LINGER=0.002``).

    Raises KeyError for an unknown target or a malformed setting."""
    base, *settings = name.split("@")
    target = TARGETS[base]
    if not settings:
        return target
    env = dict(target.env)
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise KeyError(name)
        env[key] = value
    label = f"{target.label} [{', '.join(settings)}]"
    return dataclasses.replace(target, name=f"{base}-{name_part('-'.join(settings))}", label=label, env=env)


def name_part(text: str) -> str:
    """``text`` fit for a target's name, which names its vhost: other characters become ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)
