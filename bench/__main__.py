"""``python -m bench``: run the scenarios against the targets, print and write the report.

Writes ``bench/results/<stamp>.{md,json}``, ``<stamp>-*.png`` and copies the
markdown to ``bench/results/latest.md``. Exit status 0 if every selected target
ran (a target's failure is recorded in the report, not raised).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import private, report, scenarios, services
from bench.profiles import PROFILES
from bench.targets import TARGETS, lookup

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("idle", "latency", "fanout")
DEFAULT_TARGETS = ("relay", "sio", "stomp", "hub", "hub-dist", "hub-dist-nohist")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated, from {', '.join(TARGETS)}; <target>@KEY=VALUE changes its environment",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="idle (memory, connect rate, storm), latency (rates, saturation), fanout",
    )
    p.add_argument(
        "--restart-rabbitmq",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="restart RabbitMQ with a raised `ulimit -n` when its socket limit is too "
        "low for Web-STOMP (default: only in the full profile)",
    )
    p.add_argument(
        "--private-services",
        action="store_true",
        help="run a private RabbitMQ node and Redis for this run (CPU figures not shared with other work)",
    )
    p.add_argument("--rates", help="comma-separated notifications/s, instead of the profile's (one lever, one rate)")
    p.add_argument("--step-seconds", type=float, help="seconds each rate is published, instead of the profile's")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def _run_target(name: str, profile: Any, chosen: list[str], fd_limit: int) -> dict[str, Any]:
    target = lookup(name)
    out: dict[str, Any] = {
        "label": target.label,
        "services": list(target.services),
        "idle": [],
        "errors": [],
    }
    why = target.available()
    if why:
        out["errors"].append(f"skipped: {why}")
        return out

    def attempt(part: str, fn: Any, *args: Any) -> Any:
        t0 = time.monotonic()
        print(f"[bench] {name}: {part} …", file=sys.stderr, flush=True)
        try:
            return fn(target, profile, *args)
        except Exception as exc:
            out["errors"].append(f"{part}: {type(exc).__name__}: {exc}"[:300])
            traceback.print_exc()
            return None
        finally:
            print(f"[bench] {name}: {part} done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)

    if "idle" in chosen:
        for n in profile.idle:
            if target.client == "stomp" and n > fd_limit - 100:
                out["idle"].append({"sockets": n, "skipped": f"RabbitMQ socket limit {fd_limit}"})
                continue
            res = attempt(f"idle {n}", scenarios.idle, n)
            if res:
                out["idle"].append(res)
    if "latency" in chosen and target.client == "stomp" and profile.sockets > fd_limit - 100:
        out["errors"].append(f"latency skipped: {profile.sockets} sockets exceed RabbitMQ's socket limit {fd_limit}")
    elif "latency" in chosen:
        res = attempt("latency", scenarios.latency)
        if res:
            out["latency"] = res
    if "fanout" in chosen:
        res = attempt("fanout", scenarios.fanout)
        if res:
            out["fanout"] = res
    return out


def _known(name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    args = _parse(argv)
    profile = PROFILES[args.profile]
    if args.rates:
        profile = dataclasses.replace(profile, rates=tuple(int(r) for r in args.rates.split(",")))
    if args.step_seconds:
        profile = dataclasses.replace(profile, step_s=args.step_seconds)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if not _known(n)] + [s for s in chosen if s not in SCENARIOS]
    if unknown:
        print(f"unknown target or scenario: {', '.join(unknown)}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if args.private_services:
            print("[bench] starting a private RabbitMQ node and Redis", file=sys.stderr, flush=True)
            stack.enter_context(private.running())
        return _run(args, profile, names, chosen)


def _run(args: argparse.Namespace, profile: Any, names: list[str], chosen: list[str]) -> int:
    fd_limit = services.rabbit_fd_limit() if not private.current() else 1 << 20
    need = max(max(profile.idle), profile.sockets, profile.fanout_subs) + 500
    restart = args.restart_rabbitmq if args.restart_rabbitmq is not None else (profile.name == "full")
    if "stomp" in names and fd_limit < need and restart:
        print(f"[bench] restarting RabbitMQ with ulimit -n {need * 2} (limit was {fd_limit})", file=sys.stderr)
        services.restart_rabbit_with_nofile(max(65536, need * 2))
        fd_limit = services.rabbit_fd_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    res: dict[str, Any] = {
        "meta": {
            "started": stamp,
            "profile": profile.name,
            "profile_detail": vars(profile),
            "machine": report.machine(),
            "rabbitmq_socket_limit": fd_limit,
            "loadavg_before": os.getloadavg()[0],
            "private_services": private.current() is not None,
        },
        "targets": {},
    }
    t0 = time.monotonic()
    for name in names:
        res["targets"][name] = _run_target(name, profile, chosen, fd_limit)
    res["meta"]["duration_s"] = round(time.monotonic() - t0)
    res["meta"]["loadavg_after"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stamp}.json").write_text(json.dumps(res, indent=1, default=str))
    try:
        pngs = report.plots(res, args.out, stem=stamp)
    except ImportError as exc:  # matplotlib is only for the plots: the figures stand without them
        print(f"[bench] no plots ({exc}); `pip install -e '.[bench]'` for them", file=sys.stderr)
        pngs = []
    md = report.markdown(res, pngs)
    (args.out / f"{stamp}.md").write_text(md)
    shutil.copyfile(args.out / f"{stamp}.md", args.out / "latest.md")
    print(md)
    wrote = ".json, plots" if pngs else ".json, no plots"
    print(f"[bench] wrote {args.out}/{stamp}.md ({wrote}) in {res['meta']['duration_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
