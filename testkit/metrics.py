"""Reading the hub's ``/metrics`` (Prometheus text exposition) in tests."""

from __future__ import annotations


def sample(text: str, name: str) -> float:
    """The value of the sample exposed as ``name`` (with its labels as written, e.g.
    ``hub_closes_total{code="1011"}``) in ``text``; 0 when absent, as a labelled counter
    is until it is first incremented."""
    prefix = name + " "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[-1])
    return 0.0
