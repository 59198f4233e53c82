"""Run profiles: how big and how long each scenario is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of one benchmark run; every loop below is bounded by these."""

    name: str
    sockets: int  # sockets (one user each) for the latency scenario
    rates: tuple[int, ...]  # notifications/s tried in the latency scenario
    step_s: float  # publishing time per rate step
    refine: int  # bisection steps of the saturation search after the rate sweep
    idle: tuple[int, ...]  # idle socket counts (memory per socket, connect rate)
    storm: bool  # reconnect storm at the largest idle count
    fanout_subs: int  # subscribers of the single fan-out topic
    fanout_rates: tuple[int, ...]  # publishes/s to that topic
    drain_s: float  # longest wait for stragglers after publishing stops
    receivers: int  # receiver processes for the latency and fan-out scenarios
    publishers: int  # publisher processes
    connect_concurrency: int  # handshakes in flight per receiver process
    p99_limit_ms: float = 50.0
    stop_early: bool = True  # stop the rate sweep at deep overload (False: every rate is measured)


PROFILES = {
    "quick": Profile(
        "quick",
        sockets=200,
        rates=(500, 1000, 2000),
        step_s=3,
        refine=0,
        idle=(500,),
        storm=True,
        fanout_subs=200,
        fanout_rates=(5, 10),
        drain_s=3,
        receivers=2,
        publishers=1,
        connect_concurrency=50,
    ),
    "full": Profile(
        "full",
        sockets=1000,
        rates=(1000, 2000, 3000, 4000, 5000),
        step_s=10,
        refine=2,
        idle=(1000, 5000, 10000),
        storm=True,
        fanout_subs=1000,
        fanout_rates=(1, 2, 4),
        drain_s=10,
        receivers=2,
        publishers=2,
        connect_concurrency=100,
    ),
    # Issue 12's per-notification figures, bounded (~1 min a target): 1,000 sockets at the
    # rates the issue names, nothing else.
    "pernote": Profile(
        "pernote",
        sockets=1000,
        rates=(1000, 2000, 3000),
        step_s=6,
        refine=0,
        idle=(1000,),
        storm=False,
        fanout_subs=200,
        fanout_rates=(5,),
        drain_s=6,
        receivers=2,
        publishers=2,
        connect_concurrency=100,
        stop_early=False,
    ),
    "smoke": Profile(
        "smoke",
        sockets=20,
        rates=(100,),
        step_s=1,
        refine=0,
        idle=(50,),
        storm=True,
        fanout_subs=20,
        fanout_rates=(5,),
        drain_s=2,
        receivers=1,
        publishers=1,
        connect_concurrency=20,
    ),
}
