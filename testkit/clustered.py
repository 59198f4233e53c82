"""The ``clustered`` backend of the contract suite: Redis Cluster + RabbitMQ cluster + 4 shards.

One private Redis Cluster (3 primaries + 3 replicas, ``testkit.redis_cluster``) and one
private 3-node RabbitMQ cluster with the consistent-hash exchange plugin
(``testkit.rabbit_cluster``) per test session: started on first use (slow: seconds for
Redis, tens of seconds for RabbitMQ), shared by every deployment, stopped and removed at
exit. Each deployment gets its own exchange, queue and Redis key names
(``testkit.services.names``), so deployments on the shared clusters never meet.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from testkit.rabbit_cluster import RabbitCluster, start_cluster
from testkit.redis_cluster import RedisClusterSetup
from testkit.services import names

#: Ingest shards of the clustered backend (``HUB_INGEST_SHARDS``: ignored by a hub without sharding).
SHARDS = 4

_lock = threading.Lock()
_clusters: tuple[RedisClusterSetup, RabbitCluster] | None = None


def shared_clusters() -> tuple[RedisClusterSetup, RabbitCluster]:
    """This session's Redis Cluster and RabbitMQ cluster, started on the first call (blocking)."""
    global _clusters
    with _lock:
        if _clusters is None:
            redis = RedisClusterSetup().start()
            try:
                base = Path(tempfile.mkdtemp(prefix="hubtest-rabbit-cluster-"))
                rabbit = start_cluster(base, 3, plugins=["rabbitmq_consistent_hash_exchange"])
            except BaseException:
                redis.close()
                raise
            _clusters = (redis, rabbit)
            atexit.register(stop_shared_clusters)
        return _clusters


def stop_shared_clusters() -> None:
    """Stop and remove the session's clusters, if started (pytest's session end; at exit too)."""
    global _clusters
    with _lock:
        if _clusters is not None:
            redis, rabbit = _clusters
            _clusters = None
            for node in rabbit.nodes:  # one by one: this may run at interpreter exit, without threads
                node.stop()
            shutil.rmtree(rabbit.base, ignore_errors=True)
            redis.close()


@contextlib.asynccontextmanager
async def clustered_environment(*, history: bool = True) -> AsyncIterator[dict[str, str]]:
    """The HUB_* environment of one isolated deployment on the shared clusters. Its keys are
    left to the cluster's removal at exit (a private cluster: nobody else reads them)."""
    redis, rabbit = await asyncio.to_thread(shared_clusters)
    env = {
        "HUB_AMQP_URL": rabbit.nodes[0].amqp_url(),
        "HUB_REDIS_URL": redis.url,
        "HUB_INGEST_SHARDS": str(SHARDS),
        **names(),
    }
    if not history:
        env["HUB_HISTORY_SIZE"] = "0"
    yield env
