"""A private RabbitMQ node and Redis server for one benchmark run.

The shared services (127.0.0.1:5672 / 6379) carry everybody's tests: their CPU, sampled
as "the RabbitMQ share of a connect", includes whatever else ran meanwhile. ``private()``
starts a RabbitMQ node (``testkit.rabbit_node``) and a Redis server of our own on free
loopback ports, points ``bench.services`` at them for the duration (vhosts, Redis dbs,
the pids sampled for CPU and memory) and stops and removes both afterwards.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import services
from testkit.net import free_port
from testkit.rabbit_node import RabbitNode, start_nodes


def _group_pids(process: subprocess.Popen[bytes] | None) -> list[int]:
    """Every process of ``process``'s group (a RabbitMQ node is a few of them)."""
    if process is None:
        return []
    group = process.pid
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == group:
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def _redis(base: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*argv, "--dir", str(base)], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        services.wait_port(port, 30)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(10)


def _patched(node: RabbitNode, redis_port: int, redis_proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    def create_vhost(name: str) -> str:
        node.ctl("add_vhost", name, check=False)
        node.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return node.amqp_url(vhost=name)

    def delete_vhost(name: str) -> None:
        node.ctl("delete_vhost", name, check=False)

    def flush_redis_db(db: int) -> None:
        subprocess.run(["redis-cli", "-p", str(redis_port), "-n", str(db), "FLUSHDB"], capture_output=True, timeout=30)

    return {
        "create_vhost": create_vhost,
        "delete_vhost": delete_vhost,
        "flush_redis_db": flush_redis_db,
        "REDIS_BASE": f"redis://127.0.0.1:{redis_port}/",
        "rabbit_pids": lambda: _group_pids(node.process),
        "redis_pids": lambda: [redis_proc.pid],
    }


@contextlib.contextmanager
def private() -> Iterator[RabbitNode]:
    """Run the block against a private RabbitMQ node and Redis server (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="bench-private-") as tmp:
        base = Path(tmp)
        (node,) = start_nodes(base, ["bench"])
        try:
            with _redis(base) as (port, proc):
                patch = _patched(node, port, proc)
                saved = {name: getattr(services, name) for name in patch}
                for name, value in patch.items():
                    setattr(services, name, value)
                try:
                    yield node
                finally:
                    for name, value in saved.items():
                        setattr(services, name, value)
        finally:
            node.stop()
