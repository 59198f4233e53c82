"""Private ``redis-server`` processes (plain, cluster node or Sentinel) for tests and benchmarks.

The shared Redis (127.0.0.1:6379) is never reconfigured: a test that needs a cluster, a
replica or a failover starts its own servers here, on loopback ports of their own
(``testkit.net.free_port``), with their data and config under a temporary directory.
They run in the foreground as our children: ``kill`` is SIGKILL (a crash), ``stop``
ends them and ``RedisGroup.close`` removes the directory.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from testkit.net import free_port, reachable
from testkit.services import ServiceMissing

START_TIMEOUT = 30.0
#: First starts of one server tried, each on new ports, while its ports turn out taken.
PORT_TRIES = 3


class PortTaken(RuntimeError):
    """The server could not listen: its port was taken after ``free_port`` chose it."""


def redis_tool(name: str) -> str:
    """The path of ``redis-server`` / ``redis-cli``; ServiceMissing when not installed."""
    tool = shutil.which(name)
    if tool is None:
        raise ServiceMissing(f"{name} is not installed (Debian: apt-get install -y redis-server redis-tools)")
    return tool


@dataclass
class RedisServer:
    """One private ``redis-server``; ``config`` lines go to its own config file."""

    base: Path
    port: int = field(default_factory=free_port)
    config: list[str] = field(default_factory=list)
    sentinel: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and return once its port accepts connections.

        ``free_port`` only says a port was free a moment ago: on a first start that finds
        its port (or its cluster bus port) taken since, the server gets new ones and is
        started again, up to ``PORT_TRIES`` times. A restart keeps its ports (others know
        them), and fails if they are taken."""
        first = self.process is None
        for attempt in range(1, PORT_TRIES + 1):
            try:
                return self._start()
            except PortTaken:
                if not first or attempt == PORT_TRIES:
                    raise
                (self.base / "redis.log").unlink(missing_ok=True)  # the next try's lines only
                self.port = free_port()
                bus = free_port()
                self.config = [f"cluster-port {bus}" if c.startswith("cluster-port ") else c for c in self.config]
        raise AssertionError("unreachable")

    def _start(self) -> RedisServer:
        self.base.mkdir(parents=True, exist_ok=True)
        conf = self.base / "redis.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.base}",
            "save ''" if not self.sentinel else "",
            "appendonly no" if not self.sentinel else "",
            f"logfile {self.base / 'redis.log'}",
            *self.config,
        ]
        conf.write_text("\n".join(line for line in lines if line) + "\n")
        command = [redis_tool("redis-server"), str(conf)] + (["--sentinel"] if self.sentinel else [])
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not reachable("127.0.0.1", self.port, timeout=0.5):
            if self.process.poll() is not None:
                tail = self.log_tail()
                error = PortTaken if "Address already in use" in tail else RuntimeError
                raise error(f"redis-server on {self.port} exited: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not listen within {START_TIMEOUT:g} s")
            time.sleep(0.05)  # polling the port with a deadline
        return self

    def cli(self, *args: str, timeout: float = 30) -> str:
        """``redis-cli -p <port> args…``'s output; RuntimeError when it fails or answers an error."""
        command = [redis_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(self.port), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0 or result.stdout.startswith(("ERR", "(error)")):
            raise RuntimeError(f"redis-cli -p {self.port} {' '.join(args)}: {(result.stderr or result.stdout).strip()}")
        return result.stdout

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict."""
        pairs = (line.split(":", 1) for line in self.cli("INFO", section).splitlines() if ":" in line)
        return {k: v.strip() for k, v in pairs}

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or handed over."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        log = self.base / "redis.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


class RedisGroup:
    """Servers under one temporary directory, stopped and removed together by ``close``."""

    def __init__(self, tag: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"hubtest-{tag}-"))
        self.servers: list[RedisServer] = []

    def add(self, name: str, config: list[str] | None = None, *, sentinel: bool = False) -> RedisServer:
        server = RedisServer(self.root / name, config=config or [], sentinel=sentinel)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def wait_until(check: object, what: str, timeout: float = 60.0) -> None:
    """Poll the callable ``check`` until it returns true (errors count as false), with a deadline."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            last = exc
        time.sleep(0.1)  # polling with a deadline
    raise RuntimeError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))
