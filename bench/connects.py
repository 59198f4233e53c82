"""The connect probes: connect rate and CPU per connect, idle memory, reconnect storm, burst.

``python -m bench.connects`` runs them against the relay and the distributed hub (history
on and off), one target at a time, and prints one JSON document. ``--hub-exe`` adds the
same hub targets served by another install (e.g. ``/work/wt/before/.venv/bin/hub``), so a
before and an after are measured in the same run and compared as ratios to the relay.

Per target (fresh vhost and Redis db each):

- ``connect``: ``--sockets`` sockets at ``--concurrency`` handshakes in flight per
  receiver; connects/s, CPU µs per connect (target + the services it uses, sampled over
  the connect phase) and the hub's RSS per socket 3 s later;
- ``storm`` (``--storm``): every socket dropped at once and reconnected, then one
  notification published to every user; ``back_s`` is until every socket is connected
  again, ``receiving_s`` until every socket got its notification (n/a unless all did);
- ``burst`` (``--burst N``): N more sockets at once (no pacing), refusals by close code;
  each is tried ``--burst-tries`` times (default 3).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.private import private
from bench.procstat import Sampler, rss_of
from bench.profiles import Profile
from bench.scenarios import Harness
from bench.targets import Target, lookup, name_part
from bench.workers import refusals

#: Redis db for every target of this probe (one target runs at a time): not the suite's 10/11.
REDIS_DB = 14


def _profile(concurrency: int) -> Profile:
    return Profile(
        "connects",
        sockets=0,
        rates=(),
        step_s=1,
        refine=0,
        idle=(),
        storm=True,
        fanout_subs=0,
        fanout_rates=(),
        drain_s=30,
        receivers=2,
        publishers=1,
        connect_concurrency=concurrency,
    )


def variant(name: str, label: str, hub_exe: str | None) -> Target:
    """``name`` from bench.targets, on this probe's vhost and Redis db, served by ``hub_exe``."""
    base = lookup(name)
    server = base.server if hub_exe is None else tuple(hub_exe if a == "{hub}" else a for a in base.server)
    db = REDIS_DB if base.redis_db is not None else None
    return dataclasses.replace(base, name=f"perfc-{name_part(label)}", label=label, server=server, redis_db=db)


def _uptime() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.contextmanager
def profiled(pids: list[int], out: Path | None) -> Iterator[None]:
    """py-spy (``pip install py-spy``) records the first of ``pids`` into ``out`` (collapsed
    stacks, one per line) while the block runs; nothing when ``out`` is None."""
    if out is None or not pids:
        yield
        return
    # the one installed beside this Python (the virtualenv's), not whatever PATH finds
    argv = [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--pid",
        str(pids[0]),
        "--format",
        "raw",
        "--rate",
        "200",
        "--nonblocking",
    ]
    spy = subprocess.Popen([*argv, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)  # attached before the first connect
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def connect_phase(harness: Harness, users: list[str], spy: Path | None = None, tries: int = 3) -> dict[str, Any]:
    """Open a socket per user; the rate, and the CPU spent meanwhile per connect."""
    with profiled(harness.live.pids, spy), Sampler(harness.groups()) as sampler:
        out = harness.connect(users, tries)
    usage = sampler.usage
    server = usage["target"].cpu_s + sum(usage[k].cpu_s for k in harness.live.target.services)
    out["cpu_s"] = {k: round(u.cpu_s, 3) for k, u in usage.items()}
    out["cpu_us_per_connect"] = server / max(1, out["ok"]) * 1e6
    out["load"] = _uptime()
    return out


def storm(harness: Harness, spy: Path | None = None) -> dict[str, Any]:
    """Drop every socket, reconnect all, then publish one notification to every user.

    Each publisher round-robins over every user, so the probe lasts long enough for each
    publisher to reach each user once (the old probe split one round over the publishers:
    half the users never got one, and "receiving again" was always n/a).
    """
    with profiled(harness.live.pids, spy), Sampler(harness.groups()) as sampler:
        for r in harness.receivers:
            r.send({"op": "storm", "concurrency": harness.profile.connect_concurrency})
        replies = [r.recv(300) for r in harness.receivers]
    usage = sampler.usage
    server = usage["target"].cpu_s + sum(usage[k].cpu_s for k in harness.live.target.services)
    t_drop = min(x["t_drop"] for x in replies)
    t_all = max(x["t_all"] for x in replies)
    ok = sum(x["ok"] for x in replies)
    users = len(harness.users)
    rate = min(5000.0, max(200.0, users / 2))
    probe = harness.step(rate, users * harness.profile.publishers / rate)
    stats = [r.call({"op": "stats"}, 60) for r in harness.receivers]
    with_msg = sum(s["with_msg"] for s in stats)
    last = max(s["first_ns_max"] for s in stats)
    return {
        "sockets": len(harness.sock_users),
        "reconnected": ok,
        "back_s": (t_all - t_drop) / 1e9,
        "receiving": with_msg,
        "receiving_s": (last - t_drop) / 1e9 if with_msg == len(harness.sock_users) else math.nan,
        "probe_publish_s": probe.wall_s,
        "probe_lost": probe.lost,
        "errors": refusals(replies),
        # until every socket is back: the drop, the closes and the reconnects
        "cpu_s": {k: round(u.cpu_s, 3) for k, u in usage.items()},
        "cpu_us_per_socket": server / max(1, ok) * 1e6,
        # sockets that took a closed socket's queue (hub.backends.spare_queues; 0 for the relay)
        "spare_queue_reuses": _metrics(harness.live.port).get("hub_spare_queue_reuses_total", 0.0),
        "load": _uptime(),
    }


def _metrics(port: int) -> dict[str, float]:
    """The hub's ``/metrics`` samples by name and labels (empty for the relay)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in samples}


def _closes(port: int) -> dict[str, float]:
    """The hub's ``hub_closes_total`` by close code (empty for the relay)."""
    closes = {}
    for name, value in _metrics(port).items():
        if m := re.fullmatch(r'hub_closes_total\{code="(\d+)"\}', name):
            closes[m[1]] = value
    return closes


def run_target(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Every probe against ``target``, freshly started for the connects and again for the burst."""
    out: dict[str, Any] = {"label": target.label}
    with target.running() as live:
        time.sleep(1)
        rss0 = rss_of(live.pids)
        harness = Harness(live, _profile(args.concurrency), receivers=2)
        try:
            spy = args.py_spy / f"{target.label}.txt" if args.py_spy and target.client == "hub" else None
            out["connect"] = connect_phase(harness, [f"c{i}" for i in range(args.sockets)], spy)
            time.sleep(3)
            out["connect"]["kb_per_socket"] = (rss_of(live.pids) - rss0) / max(1, out["connect"]["ok"]) / 1024
            if args.storm:
                out["storm"] = storm(harness, spy and spy.with_name(f"{target.label}-storm.txt"))
        finally:
            harness.close()
    if args.burst:
        with target.running() as live:
            time.sleep(1)
            rss0 = rss_of(live.pids)
            burst = Harness(live, _profile(max(1, args.burst // 2)), receivers=2)
            try:
                out["burst"] = connect_phase(burst, [f"b{i}" for i in range(args.burst)], tries=args.burst_tries)
                time.sleep(3)
                out["burst"]["kb_per_socket"] = (rss_of(live.pids) - rss0) / max(1, out["burst"]["ok"]) / 1024
                out["burst"]["closes_by_code"] = _closes(live.port)
            finally:
                burst.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.connects", description=__doc__)
    p.add_argument("--sockets", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=100, help="handshakes in flight per receiver (2 receivers)")
    p.add_argument("--storm", action="store_true")
    p.add_argument("--burst", type=int, default=0)
    p.add_argument(
        "--burst-tries",
        type=int,
        default=3,
        help="tries per burst socket (a 1013 is retried after 0.2 s); raise it on a slow box to see "
        "what a whole burst leaves in memory",
    )
    p.add_argument("--targets", default="relay,hub-dist,hub-dist-nohist")
    p.add_argument("--private", action="store_true", help="on a private RabbitMQ node and Redis (bench.private)")
    p.add_argument("--py-spy", type=Path, default=None, help="record each hub's connect phase and storm here")
    p.add_argument("--hub-exe", default=None, help="also run the hub targets with this hub executable ('before')")
    args = p.parse_args(argv)
    plan: list[Target] = []
    for name in args.targets.split(","):
        if name == "relay":
            plan.append(variant(name, "relay", None))
            continue
        if args.hub_exe:
            plan.append(variant(name, f"before-{name}", args.hub_exe))
        plan.append(variant(name, f"after-{name}", None))
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": _uptime()}
    with private() if args.private else contextlib.nullcontext():
        for target in plan:
            print(f"[connects] {target.label} …", file=sys.stderr, flush=True)
            try:
                results[target.label] = run_target(target, args)
            except Exception as exc:
                results[target.label] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    results["load_after"] = _uptime()
    print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
