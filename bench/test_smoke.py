"""Smoke test of the load generator itself, against the minimal reference relay.

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest, allowed to create vhost
``bench-relay``); skipped when it isn't reachable. Bounded: about 10 s.
"""

from __future__ import annotations

import pytest

from bench import scenarios
from bench.profiles import PROFILES
from bench.targets import TARGETS
from testkit.net import reachable

pytestmark = [
    pytest.mark.skipif(not reachable("127.0.0.1", 5672), reason="RabbitMQ not reachable on 127.0.0.1:5672"),
    pytest.mark.timeout(90),
]


def test_relay_delivers_everything_once_and_measures_it() -> None:
    result = scenarios.latency(TARGETS["relay"], PROFILES["smoke"])
    assert result["connect"]["ok"] == PROFILES["smoke"].sockets
    (step,) = result["steps"]
    assert step["sent"] == step["expected"] == step["delivered"] > 0
    assert step["lost"] == step["dups"] == step["stale"] == 0
    assert 0 < step["latency_ms"]["p50"] <= step["latency_ms"]["p99"] <= step["latency_ms"]["max"]
    assert step["cpu_s"]["target"] > 0


def test_storm_reconnects_every_socket_and_each_receives_again() -> None:
    result = scenarios.idle(TARGETS["relay"], PROFILES["smoke"], max(PROFILES["smoke"].idle))
    storm = result["storm"]
    assert storm["reconnected"] == storm["sockets"] == storm["receiving"]
    assert storm["probe_lost"] == 0
    assert 0 < storm["reconnect_s"] <= storm["recovered_s"] < 30
