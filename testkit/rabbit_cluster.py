"""A private N-node RabbitMQ cluster on loopback, for tests of node loss.

Built on ``testkit.rabbit_node``: every node has its own name, AMQP and Erlang
distribution ports (``free_port``), data and log directories; the nodes share one private
``HOME`` (so one Erlang cookie of their own, which the shared node on 5672 does not know).
The nodes start concurrently, then every node but the first runs ``join_cluster`` against
the first. ``kill`` sends SIGKILL to one node's process group (a crash, not a clean stop),
``restart`` brings it back into the cluster, ``quorum_leader`` names the node leading a
quorum queue, ``stop`` ends every node and removes the directory.

Usage::

    cluster = start_cluster(tmp_path, 3, plugins=["rabbitmq_consistent_hash_exchange"])
    try:
        url = cluster.urls()          # "amqp://…:p1/%2F,amqp://…:p2/%2F,…" for HUB_AMQP_URL
        cluster.kill(cluster.nodes[0])
    finally:
        cluster.stop()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from testkit.net import free_port
from testkit.rabbit_node import RABBITMQ_BIN, RabbitNode
from testkit.services import ServiceMissing


@dataclass
class ClusterNode(RabbitNode):
    """A ``RabbitNode`` whose ``HOME`` (and so Erlang cookie) is shared with its cluster."""

    shared_home: Path | None = None

    @property
    def home(self) -> Path:
        assert self.shared_home is not None, "expected a node made by start_cluster"
        return self.shared_home

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class RabbitCluster:
    """Running nodes that form one cluster; see the module docstring."""

    base: Path
    nodes: list[ClusterNode] = field(default_factory=list)

    def alive(self) -> list[ClusterNode]:
        """The nodes whose process runs (not killed, not stopped)."""
        return [node for node in self.nodes if node.alive]

    def urls(self, user: str = "guest", password: str = "guest", vhost: str = "/") -> str:
        """Every node's AMQP URL, comma-separated (the form ``HUB_AMQP_URL`` takes)."""
        return ",".join(node.amqp_url(user, password, vhost) for node in self.nodes)

    def ctl(self, *args: str) -> str:
        """Run ``rabbitmqctl`` against the first living node; return its output."""
        alive = self.alive()
        if not alive:
            raise RuntimeError("no node of the cluster runs")
        return alive[0].ctl(*args)

    def add_vhost(self, vhost: str, user: str = "guest") -> None:
        """Create ``vhost`` and give ``user`` every permission on it."""
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")

    def node_named(self, erlang_name: str) -> ClusterNode:
        """The node called ``erlang_name`` (``name@localhost``)."""
        for node in self.nodes:
            if node.node == erlang_name:
                return node
        raise LookupError(f"expected one of {[n.node for n in self.nodes]}, got {erlang_name!r}")

    def queue_info(self, queue: str, vhost: str = "/") -> dict[str, object]:
        """``list_queues`` row of ``queue`` (name, type, leader, members, online, node)."""
        out = self.ctl(
            "list_queues", "-p", vhost, "name", "type", "leader", "members", "online", "pid", "--formatter", "json"
        )
        for row in json.loads(out or "[]"):
            if row.get("name") == queue:
                return dict(row)
        raise LookupError(f"expected a queue {queue!r} in vhost {vhost!r}")

    def quorum_leader(self, queue: str, vhost: str = "/") -> ClusterNode:
        """The node leading quorum queue ``queue`` now (raises while it has none)."""
        leader = self.queue_info(queue, vhost).get("leader")
        if not isinstance(leader, str) or "@" not in leader:
            raise LookupError(f"quorum queue {queue!r} has no leader now ({leader!r})")
        return self.node_named(leader)

    def connections_on(self, node: ClusterNode) -> int:
        """How many AMQP client connections ``node`` itself holds now (not the cluster's)."""
        return int(node.ctl("eval", "length(rabbit_networking:local_connections()).").strip())

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL the node's whole process group (beam and its children): a crash."""
        process = node.process
        assert process is not None, f"expected {node.node} to run"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def restart(self, node: ClusterNode) -> None:
        """Start a killed or stopped node again; it rejoins the cluster from its data."""
        assert not node.alive, f"expected {node.node} to be down"
        node.start()
        node.wait()

    def stop(self) -> None:
        """Stop every node and remove the cluster's directory; idempotent."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.nodes))) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))
        shutil.rmtree(self.base, ignore_errors=True)


def start_cluster(base: Path, size: int = 3, *, plugins: Sequence[str] = ()) -> RabbitCluster:
    """Start ``size`` private nodes under ``base`` (concurrently), each with ``plugins``, and
    cluster them; return the running cluster. The caller must call ``RabbitCluster.stop``."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        raise ServiceMissing("rabbitmq-server (Debian package rabbitmq-server)")
    if size < 1:
        raise ValueError(f"expected a cluster of at least one node, got {size}")
    tag = uuid.uuid4().hex[:6]
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    cluster = RabbitCluster(base=base)
    cluster.nodes = [
        ClusterNode(
            name=f"hubcluster-{tag}-{index}",
            base=base / f"node{index}",
            amqp_port=free_port(),
            dist_port=free_port(),
            plugins=tuple(plugins),
            shared_home=home,
        )
        for index in range(size)
    ]
    try:
        for node in cluster.nodes:
            node.write_config(None)  # the first writes the shared cookie, the others reuse it
            node.start()
        for node in cluster.nodes:
            node.wait()
        seed = cluster.nodes[0].node
        for node in cluster.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", seed)
            node.ctl("start_app")
        running = cluster.nodes[0].ctl("eval", "length(rabbit_nodes:all_running()).").strip()
        if running != str(size):
            raise RuntimeError(f"expected {size} running nodes in the cluster, got {running}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def main() -> None:  # pragma: no cover - a manual smoke run: python -m testkit.rabbit_cluster
    import tempfile

    cluster = start_cluster(Path(tempfile.mkdtemp(prefix="rabbit-cluster-")), 3)
    try:
        print(cluster.urls())
        print(cluster.ctl("cluster_status"))
    finally:
        cluster.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
