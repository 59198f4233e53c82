"""The systems under test, each a small adapter: how to start it, reach it, publish to it.

``TARGETS`` maps a name to a ``Target``. ``Target.running()`` creates the target's
own RabbitMQ vhost / Redis db, starts its server in a new process group, waits
until it listens, yields a ``Live`` handle, and on exit kills the process group
and deletes the vhost and flushes the db — also when the body raised.
"""

from __future__ import annotations

import contextlib
import os
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

    def available(self) -> str | None:
        """None if this target can run here, else why not."""
        if self.client == "hub":
            exe = Path(sys.executable).parent / "hub"
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
            redis = f"{services.REDIS_BASE}{self.redis_db}"
        proc: subprocess.Popen[bytes] | None = None
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
                    "hub": str(Path(sys.executable).parent / "hub"),
                }
                argv = [a.format(**subst) for a in self.server]
                env = {**os.environ, **{k: v.format(**subst) for k, v in self.env.items()}}
                LOGS.mkdir(parents=True, exist_ok=True)
                log = (LOGS / f"{self.name}.log").open("ab")
                proc = subprocess.Popen(
                    argv, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True, preexec_fn=_raise_nofile
                )
                log.close()
                _wait_listening(proc, port)
                live = Live(self, descendants(proc.pid), port, amqp)
            yield live
        finally:
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
            "sio",
            "python-socketio",
            "sio",
            "sio",
            server=("{py}", "-m", "bench.peers.sio_server", "--port", "{port}", "--amqp", "{amqp}"),
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
        ),
        Target(
            "hub-dist-nohist",
            "hub (distributed, history off)",
            "hub",
            "amqp",
            redis_db=11,
            server=_HUB,
            env={**_DIST_ENV, "HUB_HISTORY_SIZE": "0"},
        ),
    )
}
PEERS = ("relay", "sio", "stomp")
