"""The per-notification table and verdicts (bench/ratios.py), from a made-up run: pure logic."""

from __future__ import annotations

from typing import Any

from bench import ratios


def _step(rate: float, cpu_us: float, p99: float, lost: int = 0) -> dict[str, Any]:
    delivered = int(rate * 6)
    return {
        "rate": rate,
        "achieved": rate,
        "delivered": delivered,
        "lost": lost,
        "dups": 0,
        "latency_ms": {"p50": p99 / 3, "p99": p99},
        "cpu_s": {"target": cpu_us * delivered / 2e6, "rabbitmq": cpu_us * delivered / 2e6, "redis": 0.0},
        "cpu_us_per_delivery": cpu_us,
    }


RUN: dict[str, Any] = {
    "targets": {
        "relay": {
            "label": "relay",
            "services": ["rabbitmq"],
            "latency": {"steps": [_step(2000, 300, 3), _step(3000, 250, 6)]},
        },
        "hub-dist": {
            "label": "hub",
            "services": ["rabbitmq", "redis"],
            "latency": {"steps": [_step(2000, 590, 20), _step(3000, 600, 80, lost=1)]},
        },
    }
}


def test_cpu_is_compared_with_the_relay_at_the_same_rate() -> None:
    assert ratios.cpu_ratio(RUN, "hub-dist", 2000) == 590 / 300
    assert ratios.cpu_ratio(RUN, "hub-dist", 3000) == 600 / 250
    assert ratios.cpu_ratio(RUN, "hub-dist", 1000) is None  # not run: no ratio, not a zero


def test_goals_say_met_and_not_met_with_the_figures() -> None:
    rows = "\n".join(ratios.goals(RUN))
    assert "p99 20.0 ms, 0 lost, 0 dups | met" in rows
    assert "1.97x | met" in rows
    assert "p99 80.0 ms, 1 lost, 0 dups | NOT met" in rows
    assert "2.40x | NOT met" in rows


def test_the_table_has_a_row_per_target_and_rate() -> None:
    rows = ratios.table(RUN)
    assert len(rows) == 2 + 4
    assert rows[-1].endswith("| 2.40 |")
