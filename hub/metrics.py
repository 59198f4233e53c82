"""Prometheus metrics, one registry per app (so several hubs can live in one test process).

Every metric is listed, with its meaning, in docs/protocol.md §7 (a test compares the
two). Besides the hub's own: the standard ``process_*`` (CPU, memory, file descriptors)
and ``python_*`` (GC, version) collectors. Counters carry no ``*_created`` series: a
scrape's counter resets already tell a restart, and the extra series doubled the
exposition for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import prometheus_client
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the hub exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):  # process_*, python_*
            registry.register(standard)
        self.connections = Gauge("hub_connections", "Open, authenticated sockets", registry=registry)
        self.connects = Counter("hub_connects", "Accepted connections", registry=registry)
        self.reconnects = Counter(
            "hub_reconnects", "Accepted connections that asked to resume (sent 'since')", registry=registry
        )
        self.notifications_in = Counter(
            "hub_notifications_in", "Notifications accepted by this replica", ["source"], registry=registry
        )
        self.notifications_out = Counter(
            "hub_notifications_out", "Notification frames written to sockets", registry=registry
        )
        self.replayed = Counter(
            "hub_notifications_replayed", "Notification frames sent from history on recovery", registry=registry
        )
        self.delivery_latency = Histogram(
            "hub_delivery_latency_seconds",
            "Time from a notification's acceptance (ts) to its write on a socket",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.auth_failures = Counter("hub_auth_failures", "Refused tokens", ["code"], registry=registry)
        self.closes = Counter("hub_closes", "Sockets closed by the hub, by close code", ["code"], registry=registry)
        self.errors = Counter("hub_errors", "Unexpected errors, by place", ["where"], registry=registry)
        self.overflows = Counter(
            "hub_socket_overflows",
            "Sockets closed with 1013 because they fell more than HUB_SOCKET_QUEUE_SIZE notifications behind",
            registry=registry,
        )
        self.gaps = Counter(
            "hub_live_gaps", "Live subscriptions restored after a broker interruption", registry=registry
        )
        self.ready = Gauge(
            "hub_ready", "1 while this replica's /readyz answers 200 (checked every few seconds)", registry=registry
        )

    def watch_backend(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        """Export the backend's own counters (read from ``stats()`` at each scrape)."""
        self.registry.register(_BackendCollector(stats))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


#: Backend counters: stats key → (exported name, without ``_total``; meaning). Keys a
#: backend does not report are left out.
BACKEND_COUNTERS: dict[str, tuple[str, str]] = {
    "sequenced": ("hub_sequenced", "Notifications appended to history by this replica's sequencer (stream writes)"),
    "sequencer_batches": (
        "hub_sequencer_batches",
        "Batches the sequencer appended and published live (hub_sequenced_total / this = the mean batch size)",
    ),
    "duplicates": ("hub_duplicates", "Redelivered or re-published ids the sequencer found already in history"),
    "overflows": (
        "hub_live_queue_overflows",
        "Socket queues that passed HUB_SOCKET_QUEUE_SIZE before the socket's session took what they held (in "
        "RabbitMQ, in the replica's buffer for the socket, or in the embedded broker); each such socket is then "
        "closed with 1013 (and counted in hub_socket_overflows_total)",
    ),
    "dropped": ("hub_live_dropped", "Live messages a socket's queue delivered that could not be read (dropped)"),
    "restore_failures": (
        "hub_restore_failures",
        "Live queues not restored after a broker interruption (socket closed with 1013)",
    ),
    "outage_closes": (
        "hub_broker_outage_closes",
        "Sockets closed with 1013 because no RabbitMQ node answered for HUB_BROKER_OUTAGE_CLOSE seconds",
    ),
    "spare_queue_reuses": (
        "hub_spare_queue_reuses",
        "Sockets that took a closed socket's RabbitMQ queue instead of declaring one (HUB_SPARE_QUEUES)",
    ),
    "redis_retries": ("hub_redis_retries", "Sequencer batches retried because Redis did not answer"),
    "history_skipped": (
        "hub_history_skipped",
        "History entries that could not be read back and were skipped (never sent)",
    ),
}
#: Backend gauges: stats key → (exported name, meaning).
BACKEND_GAUGES: dict[str, tuple[str, str]] = {
    "ingest_lag_seconds": (
        "hub_ingest_lag_seconds",
        "Age of the oldest notification in the sequencer's last batch (publish → stream)",
    ),
    "ingest_backlog": (
        "hub_ingest_backlog",
        "Messages waiting in hub.ingest, as this replica last saw them (every few seconds)",
    ),
    "ingest_consumers": (
        "hub_ingest_consumers",
        "Consumers registered on hub.ingest (one sequencer per replica; one of them is active)",
    ),
    "sequencer_inflight": (
        "hub_sequencer_inflight",
        "Ingest messages delivered to this replica's sequencer and not yet sequenced or dead-lettered",
    ),
    "spare_queues": (
        "hub_spare_queues",
        "Closed sockets' RabbitMQ queues this replica keeps for the next sockets (HUB_SPARE_QUEUES)",
    ),
    "shards_held": ("hub_shards_held", "Ingest shards this replica sequences (HUB_INGEST_SHARDS > 1)"),
    "shard_members": (
        "hub_shard_members",
        "Live replicas the ingest shards are spread over, as this replica sees them",
    ),
}


class _BackendCollector(Collector):
    """Reads the backend's counters at scrape time, so the hot path only bumps integers."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for key, (name, documentation) in BACKEND_COUNTERS.items():
            if key in stats:
                yield CounterMetricFamily(name, documentation, value=stats[key])
        if "dead_letters" in stats:
            family = CounterMetricFamily(
                "hub_dead_letters",
                "Ingest messages the sequencer sent to the dead-letter queue, by reason: bad-properties, "
                "invalid-topic, too-large, unreadable, delivery-limit, unexpected (docs/protocol.md §5; expired and "
                "overflowed ingest messages are dead-lettered by RabbitMQ and not counted here)",
                labels=["reason"],
            )
            for reason, count in stats["dead_letters"].items():
                family.add_metric([reason], count)
            yield family
        for key, (name, documentation) in BACKEND_GAUGES.items():
            if key in stats:
                yield GaugeMetricFamily(name, documentation, value=stats[key])
        if "shards" in stats:
            held = GaugeMetricFamily(
                "hub_shard_held", "1 for each ingest shard this replica sequences, else 0", labels=["shard"]
            )
            for shard, mine in stats["shards"].items():
                held.add_metric([str(shard)], 1 if mine else 0)
            yield held
