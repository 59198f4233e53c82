"""Prometheus metrics, one registry per app (so several hubs can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the hub exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
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
            "hub_socket_overflows", "Sockets closed because their queue passed its bound", registry=registry
        )
        self.gaps = Counter(
            "hub_live_gaps", "Live subscriptions restored after a broker interruption", registry=registry
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
