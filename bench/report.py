"""Turn raw results into the markdown report, the JSON file and the PNG plots.

``Results`` is the JSON-shaped dict ``bench.__main__`` builds:
``{"meta": {...}, "targets": {name: {"label", "idle": [...], "latency": {...},
"fanout": {...}, "errors": [...]}}}``. Missing parts (a target that failed or
was skipped) render as "-" and never raise.
"""

from __future__ import annotations

import math
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench import ratios

Results = dict[str, Any]
DASH = "n/a"


def machine() -> dict[str, str]:
    """CPU, cores, memory, OS, Python, RabbitMQ and Redis versions of this box."""
    cpu = DASH
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0

    def cmd(*argv: str) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return DASH
        return out.strip().splitlines()[0] if out.strip() else DASH

    os_name = DASH
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    import os

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 2**20:.0f} GiB",
        "os": f"{os_name}, Linux {platform.release()}",
        "python": platform.python_version(),
        "rabbitmq": cmd("rabbitmqctl", "version"),
        "redis": cmd("redis-server", "--version"),
    }


def _f(x: Any, fmt: str = "{:.0f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return fmt.format(x)


def saturation(t: dict[str, Any]) -> tuple[float | None, bool]:
    """(highest passing rate, True if a failing rate above it was seen) or (None, False)."""
    sat = t.get("latency", {}).get("saturation")
    if not sat:
        return None, False
    return float(sat["rate"]), bool(sat["bounded_above"])


def _sat_text(t: dict[str, Any]) -> str:
    rate, bounded = saturation(t)
    if rate is None:
        return DASH
    return f"{rate:.0f}" if bounded else f"≥ {rate:.0f}"


def _first_step(t: dict[str, Any]) -> dict[str, Any]:
    steps = t.get("latency", {}).get("steps") or []
    return steps[0] if steps else {}


def _largest_idle(t: dict[str, Any]) -> dict[str, Any]:
    idle = [i for i in t.get("idle", []) if "kb_per_socket" in i]
    return max(idle, key=lambda i: i["sockets"]) if idle else {}


def per_socket_kb(t: dict[str, Any]) -> tuple[float | None, float | None]:
    """(KB per idle socket in the target process, KB there plus in the services it uses)."""
    idle = _largest_idle(t)
    if not idle:
        return None, None
    kb = idle["kb_per_socket"]
    used = t.get("services", ("rabbitmq", "redis"))
    return kb["target"], kb["target"] + sum(kb[k] for k in used)


def summary_table(res: Results) -> list[str]:
    rows = [
        "| target | saturation /s (p99 ≤ 50 ms, no loss) | p50 / p99 ms @ first rate "
        "| CPU µs per notification (target + services) | KB per idle socket: target "
        "/ total | connects/s | storm: sockets, back in s, receiving in s |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in res["targets"].values():
        step = _first_step(t)
        lat = step.get("latency_ms", {})
        own, total = per_socket_kb(t)
        idle = _largest_idle(t)
        storm = idle.get("storm", {})
        connect = idle.get("connect", {})
        rows.append(
            f"| {t['label']} | {_sat_text(t)} | "
            f"{_f(lat.get('p50'), '{:.1f}')} / {_f(lat.get('p99'), '{:.1f}')} "
            f"@ {_f(step.get('rate'))} | {_f(step.get('cpu_us_per_delivery'))} | "
            f"{_f(own, '{:.1f}')} / {_f(total, '{:.1f}')} | "
            f"{_f(connect.get('connects_per_s'))} | "
            f"{_f(storm.get('sockets'))}, {_f(storm.get('reconnect_s'), '{:.1f}')}, "
            f"{_f(storm.get('recovered_s'), '{:.1f}')} |"
        )
    return rows


def steps_table(res: Results, part: str) -> list[str]:
    rows = [
        "| target | sockets | rate asked | achieved | p50 | p90 | p99 | p99.9 | max | lost "
        "| dups | CPU µs/notif | busiest generator process (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in res["targets"].values():
        for s in t.get(part, {}).get("steps", []):
            lat = s["latency_ms"]
            rows.append(
                f"| {t['label']} | {s['sockets']} | {s['rate']:.0f} | {s['achieved']:.0f} | "
                + " | ".join(_f(lat.get(k), "{:.1f}") for k in ("p50", "p90", "p99", "p99.9", "max"))
                + f" | {s['lost']} | {s['dups']} | {_f(s['cpu_us_per_delivery'])} | "
                f"{s['generator_core_max']:.2f} |"
            )
    return rows


def idle_table(res: Results) -> list[str]:
    rows = [
        "| target | sockets | connected | connects/s | KB/socket target | RabbitMQ | Redis | target RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in res["targets"].values():
        for i in t.get("idle", []):
            if "kb_per_socket" not in i:
                rows.append(f"| {t['label']} | {i.get('sockets')} | skipped: {i.get('skipped')} | | | | | |")
                continue
            kb, c = i["kb_per_socket"], i["connect"]
            rows.append(
                f"| {t['label']} | {i['sockets']} | {c['ok']} | "
                f"{c['connects_per_s']:.0f} | {kb['target']:.1f} | {kb['rabbitmq']:.1f} "
                f"| {kb['redis']:.1f} | {i['rss_mb']['target']:.0f} |"
            )
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def goals_table(res: Results) -> list[str]:
    """The issue's targets, each as hub ÷ peer from this run, with a verdict."""
    ts = res["targets"]
    rows = ["| goal (issue 6) | hub variant | measured | ratio | verdict |", "|---|---|---|---|---|"]

    def verdict(value: float | None, ok: bool, bounded: bool = True) -> str:
        if value is None:
            return "not measured"
        return ("met" if ok else "NOT met") + ("" if bounded else " (peer not saturated)")

    def sat(name: str) -> tuple[float | None, bool]:
        return saturation(ts[name]) if name in ts else (None, False)

    for hub, need_relay in (("hub-dist", 1.0), ("hub-dist-nohist", 1.5), ("hub", 1.0)):
        if hub not in ts:
            continue
        h, hb = sat(hub)
        for peer, need in (("relay", need_relay), ("sio", 2.0), ("stomp", None)):
            p, pb = sat(peer)
            r = _ratio(h, p)
            goal = f"saturation ≥ {need}x {peer}" if need else f"saturation vs {peer} (reach)"
            ok = r is not None and need is not None and r >= need
            text = verdict(r, ok, pb) if need else ("-" if r is None else "informational")
            rows.append(
                f"| {goal} | {ts[hub]['label']} | {_f(h)} vs {_f(p)}"
                f"{'' if hb else ' (hub not saturated)'} | {_f(r, '{:.2f}')} | {text} |"
            )
        hcpu = _first_step(ts[hub]).get("cpu_us_per_delivery")
        rcpu = _first_step(ts["relay"]).get("cpu_us_per_delivery") if "relay" in ts else None
        r = _ratio(hcpu, rcpu)
        rows.append(
            f"| CPU per notification ≤ relay + RabbitMQ one hop | {ts[hub]['label']} | "
            f"{_f(hcpu)} vs {_f(rcpu)} µs | {_f(r, '{:.2f}')} | "
            f"{verdict(r, r is not None and r <= 1.0)} |"
        )
        own, total = per_socket_kb(ts[hub])
        rown = per_socket_kb(ts["relay"])[0] if "relay" in ts else None
        rows.append(
            f"| ≤ 25 KB hub memory per idle socket | {ts[hub]['label']} | "
            f"{_f(own, '{:.1f}')} KB (relay {_f(rown, '{:.1f}')}) | "
            f"{_f(_ratio(own, rown), '{:.2f}')} | "
            f"{verdict(own, own is not None and own <= 25)} |"
        )
        stotal = per_socket_kb(ts["stomp"])[1] if "stomp" in ts else None
        r = _ratio(total, stotal)
        rows.append(
            f"| per-socket total ≤ ⅓ Web-STOMP's | {ts[hub]['label']} | "
            f"{_f(total, '{:.1f}')} vs {_f(stotal, '{:.1f}')} KB | {_f(r, '{:.2f}')} | "
            f"{verdict(r, r is not None and r <= 1 / 3)} |"
        )
        idle = _largest_idle(ts[hub])
        cps = idle.get("connect", {}).get("connects_per_s")
        rows.append(
            f"| ≥ 1,000 connects/s per replica | {ts[hub]['label']} | "
            f"{_f(cps)} /s at {_f(idle.get('sockets'))} sockets | - | "
            f"{verdict(cps, cps is not None and cps >= 1000)} |"
        )
        storm = idle.get("storm", {})
        rec = storm.get("recovered_s")
        n = storm.get("sockets")
        rows.append(
            f"| 10,000-socket storm recovered ≤ 30 s | {ts[hub]['label']} | "
            f"{_f(rec, '{:.1f}')} s for {_f(n)} sockets | - | "
            f"{verdict(rec, rec is not None and rec <= 30)}"
            f"{'' if (n or 0) >= 10000 else ' (smaller storm)'} |"
        )
    return rows


def markdown(res: Results, plots: list[str]) -> str:
    """The whole report as markdown."""
    meta = res["meta"]
    m = meta["machine"]
    lines = [
        f"# Benchmark results — {meta['started']} ({meta['profile']} profile)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}; Python "
        f"{m['python']}; RabbitMQ {m['rabbitmq']}; {m['redis']}. Everything (targets, "
        "RabbitMQ, Redis, load generator) on this one box, over loopback. 1-min load "
        f"average {meta.get('loadavg_before', math.nan):.1f} before and "
        f"{meta.get('loadavg_after', math.nan):.1f} after the run (well above 0 before "
        "means other work shared the cores: expect noisy percentiles).",
        "",
        "## Summary",
        "",
        *summary_table(res),
        "",
        "## Goals from issue 6 (hub ÷ peer, same run)",
        "",
        *goals_table(res),
        "",
        "## Per notification, as ratios to the relay (issue 12)",
        "",
        *ratios.table(res),
        "",
        *ratios.goals(res),
        "",
        "## Latency by rate (publish → socket, ms)",
        "",
        *steps_table(res, "latency"),
        "",
        "## Fan-out (one topic, many subscribers)",
        "",
        *steps_table(res, "fanout"),
        "",
        "## Idle sockets",
        "",
        *idle_table(res),
        "",
    ]
    errors = [(t["label"], e) for t in res["targets"].values() for e in t.get("errors", [])]
    if errors:
        lines += ["## Errors", "", *(f"- {label}: {e}" for label, e in errors), ""]
    lines += ["## Plots", "", *(f"![{p}]({p})" for p in plots), ""]
    return "\n".join(lines)


def plots(res: Results, out: Path, stem: str) -> list[str]:
    """Write latency-vs-rate and memory-per-socket PNGs; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    cpu = ratios.plot(res, out, stem)
    if cpu:
        names.append(cpu)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key in zip(axes, ("p50", "p99"), strict=True):
        for t in res["targets"].values():
            steps = [
                s for s in t.get("latency", {}).get("steps", []) if not math.isnan(s["latency_ms"].get(key, math.nan))
            ]
            if steps:
                ax.plot(
                    [s["achieved"] for s in steps], [s["latency_ms"][key] for s in steps], marker="o", label=t["label"]
                )
        ax.axhline(50, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("achieved publish rate (notifications/s)")
        ax.set_title(f"{key} publish → socket latency")
    axes[0].set_ylabel("ms (log)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    name = f"{stem}-latency.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    names.append(name)

    labels: list[str] = []
    parts: dict[str, list[float]] = {"target": [], "rabbitmq": [], "redis": []}
    for t in res["targets"].values():
        idle = _largest_idle(t)
        if idle:
            labels.append(f"{t['label']}\n({idle['sockets']} sockets)")
            for k in parts:
                used = k == "target" or k in t.get("services", (k,))
                parts[k].append(max(0.0, idle["kb_per_socket"][k]) if used else 0.0)
    if labels:
        fig, ax = plt.subplots(figsize=(10, 4.5))
        bottom = [0.0] * len(labels)
        for k, vals in parts.items():
            ax.bar(labels, vals, bottom=bottom, label=k)
            bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
        ax.set_ylabel("KB per idle socket (RSS delta)")
        ax.set_title("memory per idle socket")
        ax.legend()
        ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        name = f"{stem}-memory.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names
