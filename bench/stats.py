"""Latency percentiles, computed exactly from every recorded sample."""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(sorted_ms: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of an ascending sequence; NaN if empty."""
    if not sorted_ms:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_ms)))
    return sorted_ms[rank - 1]


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max in milliseconds (NaN when there are no samples)."""
    ordered = sorted(samples_ms)
    out = {f"p{q:g}": percentile(ordered, q) for q in PERCENTILES}
    out["max"] = ordered[-1] if ordered else math.nan
    return out
