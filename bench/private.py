"""A private RabbitMQ node and Redis server for one benchmark run (``--private-services``).

The shared RabbitMQ and Redis also serve everyone else's tests on this box, so their CPU
during a step is not the target's alone. A run with private services starts its own node
(``testkit.rabbit_node``: own ports, data dir, cookie) and its own ``redis-server`` (own
port, no persistence) under a temporary directory, points every target at them, samples
only their processes, and stops and removes both at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testkit.net import free_port
from testkit.rabbit_node import RabbitNode, start_nodes

_current: Services | None = None


@dataclass
class Services:
    """The private node and Redis of this run."""

    rabbit: RabbitNode
    redis: subprocess.Popen[bytes]
    redis_port: int

    @property
    def redis_pid(self) -> int:
        return self.redis.pid

    def rabbit_pids(self) -> list[int]:
        """Every process of the node's process group (the Erlang VM and its helpers)."""
        assert self.rabbit.process is not None
        group = os.getpgid(self.rabbit.process.pid)
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rpartition(")")[2].split()
                except OSError:
                    continue
                if int(fields[2]) == group:
                    pids.append(int(entry.name))
        return pids

    def create_vhost(self, name: str) -> str:
        self.delete_vhost(name)
        self.rabbit.ctl("add_vhost", name)
        self.rabbit.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return self.rabbit.amqp_url(vhost=name)

    def delete_vhost(self, name: str) -> None:
        if name in self.rabbit.ctl("list_vhosts", "name").split():
            self.rabbit.ctl("delete_vhost", name)


def current() -> Services | None:
    """The private services of this run, or None (the shared ones are used)."""
    return _current


@contextlib.contextmanager
def running() -> Iterator[Services]:
    """Start a private RabbitMQ node and Redis; every ``bench.services`` call uses them inside."""
    global _current
    base = Path(tempfile.mkdtemp(prefix="bench-services-"))
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=base,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    node: RabbitNode | None = None
    try:
        (node,) = start_nodes(base / "rabbit", ["bench"])
        deadline = time.monotonic() + 30
        while subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server on {port} did not answer within 30 s")
            time.sleep(0.1)  # polling a server that starts in milliseconds, with a deadline
        _current = Services(node, redis, port)
        yield _current
    finally:
        _current = None
        if node is not None:
            node.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(redis.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            redis.wait(10)
        shutil.rmtree(base, ignore_errors=True)


#: ``bench.connects`` and ``bench.rabbit_floor`` call it by this name.
private = running
