"""A private Redis Cluster (3 primaries, 3 replicas) on loopback, for tests and benchmarks.

Six ``redis-server`` children (``testkit.redis_server``), each with its own port and
cluster-bus port (``cluster-port``: ``port + 10000`` may not exist for a high port),
joined by ``redis-cli --cluster create --cluster-replicas 1``. Slow to start (seconds):
tests share one per module or per session. ``url`` is the hub's ``redis+cluster://`` form.
"""

from __future__ import annotations

from dataclasses import dataclass

from testkit.net import free_port
from testkit.redis_server import RedisGroup, RedisServer, wait_until

#: Milliseconds without an answer before a primary counts as failed and its replica takes over.
NODE_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class ClusterNode:
    """One line of ``CLUSTER NODES``."""

    id: str
    port: int
    primary: bool
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]
    failed: bool


class RedisClusterSetup:
    """3 primaries + 3 replicas; ``start`` then ``close`` (kills all, removes the data)."""

    def __init__(self, primaries: int = 3) -> None:
        self.group = RedisGroup("redis-cluster")
        self.servers: list[RedisServer] = []
        for n in range(primaries * 2):
            bus = free_port()
            config = [
                "cluster-enabled yes",
                f"cluster-port {bus}",
                "cluster-config-file nodes.conf",
                f"cluster-node-timeout {NODE_TIMEOUT_MS}",
                "cluster-require-full-coverage no",
            ]
            self.servers.append(self.group.add(f"node{n}", config))
        self._replicas = 1

    @property
    def url(self) -> str:
        """``HUB_REDIS_URL`` for this cluster (every node given, any one would do)."""
        return "redis+cluster://" + ",".join(s.address for s in self.servers)

    def start(self) -> RedisClusterSetup:
        try:
            for server in self.servers:
                server.start()
            command = ["--cluster", "create", *(s.address for s in self.servers)]
            self.servers[0].cli(*command, "--cluster-replicas", str(self._replicas), "--cluster-yes", timeout=120)
            self.wait_healthy()
        except BaseException:
            self.close()
            raise
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every live node says ``cluster_state:ok`` and sees 3 primaries with slots."""

        def healthy() -> bool:
            for server in self.servers:
                if not server.alive:
                    continue
                if cluster_info(server).get("cluster_state") != "ok":
                    return False
                if len([n for n in self.nodes(server) if n.primary and n.slots and not n.failed]) != 3:
                    return False
            return True

        wait_until(healthy, "the Redis Cluster to be healthy", timeout)

    def nodes(self, via: RedisServer | None = None) -> list[ClusterNode]:
        """``CLUSTER NODES`` as seen by ``via`` (default: the first live node)."""
        server = via or next(s for s in self.servers if s.alive)
        found = []
        for line in server.cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            flags = fields[2].split(",")
            port = int(fields[1].split("@")[0].rpartition(":")[2])
            slots = []
            for item in fields[8:]:
                if item.startswith("["):
                    continue  # a slot being migrated
                low, _, high = item.partition("-")
                slots.append((int(low), int(high or low)))
            found.append(
                ClusterNode(
                    id=fields[0],
                    port=port,
                    primary="master" in flags,
                    primary_id=None if fields[3] == "-" else fields[3],
                    slots=tuple(slots),
                    failed="fail" in flags or "fail?" in flags,
                )
            )
        return found

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def primary_of(self, slot: int) -> RedisServer:
        """The server serving ``slot`` now."""
        for node in self.nodes():
            if node.primary and not node.failed and any(low <= slot <= high for low, high in node.slots):
                return self.server(node.port)
        raise RuntimeError(f"no live primary serves slot {slot}")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """A live replica of ``primary``."""
        nodes = self.nodes()
        primary_id = next(n.id for n in nodes if n.port == primary.port)
        for node in nodes:
            if node.primary_id == primary_id and not node.failed and self.server(node.port).alive:
                return self.server(node.port)
        raise RuntimeError(f"{primary.address} has no live replica")

    def close(self) -> None:
        self.group.close()


def cluster_info(server: RedisServer) -> dict[str, str]:
    """``CLUSTER INFO`` of ``server`` as a dict."""
    pairs = (line.split(":", 1) for line in server.cli("CLUSTER", "INFO").splitlines() if ":" in line)
    return {k: v.strip() for k, v in pairs}
