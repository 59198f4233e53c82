"""Issue 12's per-notification figures: each target as a ratio to the relay of the same run.

Reads the latency steps of ``Results`` (see ``bench.report``): per target, p99, loss,
duplicates and CPU µs per notification (target + RabbitMQ + Redis, summed) at each
rate, and the CPU ratio to the minimal relay measured at the same rate in the same run.
Then the issue's goals, each with a verdict. Missing figures render as "n/a".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

Results = dict[str, Any]
DASH = "n/a"
#: (target, CPU ratio to the relay it must stay within, p99 ms it must stay within or None)
GOALS = (("hub-dist", 2.0, 50.0), ("hub-dist-nohist", 1.15, None))
GOAL_RATES = (2000.0, 3000.0)


def _steps(t: dict[str, Any]) -> dict[float, dict[str, Any]]:
    return {float(s["rate"]): s for s in t.get("latency", {}).get("steps", [])}


def _num(x: Any, fmt: str = "{:.0f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return fmt.format(x)


def cpu_ratio(res: Results, name: str, rate: float) -> float | None:
    """CPU µs per notification of ``name`` ÷ the relay's, both at ``rate``, or None."""
    mine = _steps(res["targets"].get(name, {})).get(rate, {}).get("cpu_us_per_delivery")
    relay = _steps(res["targets"].get("relay", {})).get(rate, {}).get("cpu_us_per_delivery")
    if not mine or not relay or math.isnan(mine) or math.isnan(relay):
        return None
    return float(mine) / float(relay)


def table(res: Results) -> list[str]:
    """One row per target and rate: p99, lost, dups, CPU µs/notification, ratio to the relay."""
    rows = [
        "| target | rate asked | achieved | p50 ms | p99 ms | lost | dups | backlog before "
        "| CPU µs/notif: target + RabbitMQ + Redis = total | ÷ relay |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in res["targets"].items():
        for rate, s in sorted(_steps(t).items()):
            cpu, n = s.get("cpu_s", {}), max(1, s.get("delivered", 0))
            parts = " + ".join(
                _num(cpu.get(k, 0.0) / n * 1e6)
                for k in ("target", "rabbitmq", "redis")
                if k == "target" or k in t.get("services", ())
            )
            lat = s.get("latency_ms", {})
            rows.append(
                f"| {t['label']} | {rate:.0f} | {s['achieved']:.0f} | {_num(lat.get('p50'), '{:.1f}')} "
                f"| {_num(lat.get('p99'), '{:.1f}')} | {s['lost']} | {s['dups']} | {s.get('backlog_before', 0)} "
                f"| {parts} = {_num(s.get('cpu_us_per_delivery'))} | {_num(cpu_ratio(res, name, rate), '{:.2f}')} |"
            )
    return rows


def goals(res: Results) -> list[str]:
    """Issue 12's per-notification goals with a verdict each (met / NOT met / not measured)."""
    rows = ["| goal (issue 12) | measured | verdict |", "|---|---|---|"]
    ts = res["targets"]
    for name, limit, p99_limit in GOALS:
        if name not in ts:
            continue
        steps = _steps(ts[name])
        for rate in GOAL_RATES:
            s = steps.get(rate)
            if s is None:
                rows.append(f"| {ts[name]['label']} @ {rate:.0f}/s | not run | not measured |")
                continue
            if p99_limit is not None:
                p99 = s["latency_ms"].get("p99", math.nan)
                ok = s["lost"] == 0 and s["dups"] == 0 and p99 <= p99_limit
                rows.append(
                    f"| {ts[name]['label']}: p99 ≤ {p99_limit:.0f} ms, 0 lost @ {rate:.0f}/s | "
                    f"p99 {_num(p99, '{:.1f}')} ms, {s['lost']} lost, {s['dups']} dups | {'met' if ok else 'NOT met'} |"
                )
            r = cpu_ratio(res, name, rate)
            verdict = "not measured" if r is None else ("met" if r <= limit else "NOT met")
            rows.append(
                f"| {ts[name]['label']}: CPU/notification ≤ {limit}x relay @ {rate:.0f}/s | "
                f"{_num(s.get('cpu_us_per_delivery'))} µs, {_num(r, '{:.2f}')}x | {verdict} |"
            )
    return rows


def plot(res: Results, out: Path, stem: str) -> str | None:
    """CPU µs per notification against the rate, one line per target; the PNG's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for t in res["targets"].values():
        pts = [(r, s["cpu_us_per_delivery"]) for r, s in sorted(_steps(t).items()) if s.get("delivered")]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=t["label"])
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("asked publish rate (notifications/s)")
    ax.set_ylabel("CPU µs per notification (target + RabbitMQ + Redis)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"{stem}-cpu.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name
