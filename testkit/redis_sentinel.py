"""A private Redis primary, its replica and 3 Sentinels on loopback, for failover tests.

``redis-server --sentinel`` (no separate package needed); each Sentinel rewrites its own
config file under the group's temporary directory. ``crash_primary`` kills the primary
(SIGKILL) and returns once the Sentinels promoted the replica and all of them name it.

Losing writes on purpose: ``start(replica_via=port)`` makes the replica replicate through
a proxy the test can stall (tests/test_sentinel_failover.py), so "stall, write, kill the
primary" deterministically loses exactly what was written meanwhile — what asynchronous
replication may lose in a real failover.
"""

from __future__ import annotations

import uuid

from testkit.redis_server import RedisGroup, RedisServer, wait_until

#: The Sentinels' ``down-after-milliseconds``: how long a silent primary takes to be failed over.
DOWN_AFTER_MS = 1000


class RedisSentinelSetup:
    """Primary + replica + 3 Sentinels (quorum 2); ``start`` then ``close``."""

    def __init__(self) -> None:
        self.group = RedisGroup("redis-sentinel")
        self.master_name = "hub-" + uuid.uuid4().hex[:8]
        self.data = [self.group.add("redis-a"), self.group.add("redis-b")]
        self.sentinels: list[RedisServer] = []

    @property
    def sentinel_addresses(self) -> str:
        """``HUB_REDIS_SENTINELS``."""
        return ",".join(s.address for s in self.sentinels)

    def env(self) -> dict[str, str]:
        """The HUB_* settings selecting this primary through its Sentinels."""
        return {
            "HUB_REDIS_URL": "redis://sentinel-managed/0",
            "HUB_REDIS_SENTINELS": self.sentinel_addresses,
            "HUB_REDIS_MASTER": self.master_name,
        }

    def start(self, replica_via: int | None = None) -> RedisSentinelSetup:
        """Start everything; the replica replicates through ``replica_via`` (a proxy to the
        primary's port, ``self.data[0].port``) when given."""
        try:
            primary, replica = self.data
            primary.start()
            replica.config.append(f"replicaof 127.0.0.1 {replica_via or primary.port}")
            replica.start()
            wait_until(lambda: replica.info("replication").get("master_link_status") == "up", "the replica to sync")
            for n in range(3):
                sentinel = self.group.add(
                    f"sentinel{n}",
                    [
                        f"sentinel monitor {self.master_name} 127.0.0.1 {primary.port} 2",
                        f"sentinel down-after-milliseconds {self.master_name} {DOWN_AFTER_MS}",
                        f"sentinel failover-timeout {self.master_name} 300000",
                        f"sentinel parallel-syncs {self.master_name} 1",
                    ],
                    sentinel=True,
                )
                self.sentinels.append(sentinel.start())
            wait_until(self._settled, "the Sentinels to see the replica and each other")
        except BaseException:
            self.close()
            raise
        return self

    def _settled(self) -> bool:
        for sentinel in self.sentinels:
            fields = sentinel.cli("SENTINEL", "MASTER", self.master_name).split()
            info = dict(zip(fields[::2], fields[1::2], strict=False))
            if info.get("num-slaves") != "1" or info.get("num-other-sentinels") != "2":
                return False
        return True

    def primary_port(self, via: RedisServer | None = None) -> int:
        """The primary's port as a Sentinel (default: the first) names it."""
        sentinel = via or self.sentinels[0]
        return int(sentinel.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name).split()[1])

    @property
    def primary(self) -> RedisServer:
        port = self.primary_port()
        return next(s for s in self.data if s.port == port)

    @property
    def replica(self) -> RedisServer:
        port = self.primary_port()
        return next(s for s in self.data if s.port != port)

    def crash_primary(self) -> RedisServer:
        """SIGKILL the primary and return the replica once it was promoted by the Sentinels
        and every Sentinel names it."""
        new = self.replica
        self.primary.kill()
        return self.wait_promoted(new)

    def wait_promoted(self, new: RedisServer) -> RedisServer:
        """Return ``new`` once the Sentinels promoted it and every Sentinel names it."""
        try:
            wait_until(lambda: new.info("replication").get("role") == "master", "the replica's promotion")
        except RuntimeError as exc:
            logs = "\n".join(f"--- {s.address}\n{s.log_tail(12)}" for s in [new, *self.sentinels])
            raise RuntimeError(f"{exc}\n{logs}") from None
        wait_until(lambda: all(self.primary_port(s) == new.port for s in self.sentinels), "every Sentinel")
        return new

    def close(self) -> None:
        self.group.close()
