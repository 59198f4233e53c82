"""The five scenarios, run against one live target through one set of generator processes.

``Harness`` owns the receiver and publisher processes for one socket set; each
``step`` publishes at one rate for a fixed time, waits (bounded) for
stragglers, and returns latency percentiles, loss, duplicates, the achieved rate
and the CPU used by the target, RabbitMQ, Redis and the generator itself.
"""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import private, services
from bench.procstat import Sampler, rss_of
from bench.profiles import Profile
from bench.stats import summarize
from bench.targets import Live, Target
from bench.workers import Worker, publisher_main, receiver_main, refusals

_run_ids = iter(range(1, 1 << 30))


@dataclass
class Step:
    """One publishing step at one rate."""

    rate: float
    sockets: int
    achieved: float = 0.0
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    dups: int = 0
    stale: int = 0
    drops: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_us_per_delivery: float = math.nan  # target + the shared services it uses
    generator_core_max: float = 0.0  # busiest generator process, share of one core
    backlog_before: int = 0  # still in the target's ingest queue when the step began (after a bounded wait)
    redis_calls: dict[str, list[int]] = field(default_factory=dict)  # command → [calls, µs] (private Redis)
    errors: list[str] = field(default_factory=list)

    def passes(self, p99_limit_ms: float) -> bool:
        """Within the latency bound, nothing lost, and the asked rate really published."""
        p99 = self.latency_ms.get("p99", math.inf)
        return self.lost == 0 and not math.isnan(p99) and p99 <= p99_limit_ms and self.achieved >= 0.95 * self.rate


class Harness:
    """Receivers and publishers for one socket set against one live target."""

    def __init__(self, live: Live, profile: Profile, receivers: int) -> None:
        self.live = live
        self.profile = profile
        self.receivers = [Worker(receiver_main, live.client_spec()) for _ in range(receivers)]
        self.publishers: list[Worker] = []
        self.users: list[str] = []
        self.sock_users: list[str] = []

    def _start_publishers(self) -> None:
        if not self.publishers:
            self.publishers = [Worker(publisher_main, self.live.publish_spec()) for _ in range(self.profile.publishers)]
            for p in self.publishers:
                reply = p.recv(60)
                if not reply or not reply.get("ready"):
                    raise RuntimeError(f"publisher failed to start: {reply}")

    def pids(self) -> list[int]:
        return [w.pid for w in self.receivers + self.publishers]

    def groups(self) -> dict[str, list[int]]:
        return {
            "target": self.live.pids,
            "rabbitmq": services.rabbit_pids(),
            "redis": services.redis_pids(),
            "generator": self.pids(),
        }

    def connect(self, sock_users: list[str], tries: int = 3) -> dict[str, Any]:
        """Open sockets for ``sock_users`` spread over the receivers (each socket tried up to
        ``tries`` times); connect rate and errors."""
        self.sock_users = sock_users
        self.users = sorted(set(sock_users), key=sock_users.index)
        n = len(self.receivers)
        for i, r in enumerate(self.receivers):
            r.send(
                {
                    "op": "connect",
                    "users": sock_users[i::n],
                    "concurrency": self.profile.connect_concurrency,
                    "tries": tries,
                }
            )
        replies = [r.recv(120 + len(sock_users) / 50 * tries / 3) for r in self.receivers]
        ok = sum(x["ok"] for x in replies)
        span = (max(x["t1"] for x in replies) - min(x["t0"] for x in replies)) / 1e9
        return {
            "sockets": len(sock_users),
            "ok": ok,
            "failed": len(sock_users) - ok,
            "seconds": span,
            "connects_per_s": ok / span if span else 0.0,
            "errors": refusals(replies),
        }

    def _count(self) -> int:
        return sum(r.call({"op": "count"}, 30) for r in self.receivers)

    def step(self, rate: float, duration: float, users: list[str] | None = None) -> Step:
        """Publish ``rate``/s for ``duration`` s round-robin over ``users`` and measure."""
        self._start_publishers()
        users = users or self.users
        run = next(_run_ids)
        for r in self.receivers:
            r.call({"op": "reset", "run": run}, 30)
        result = Step(rate=rate, sockets=len(self.sock_users))
        ingest = self.live.target.ingest
        if ingest:  # no step pays for an earlier one's backlog
            result.backlog_before = services.wait_queue_empty(self.live.amqp, ingest, 60)
        services.reset_redis_stats()
        with Sampler(self.groups()) as sampler:
            for i, p in enumerate(self.publishers):
                p.send(
                    {
                        "op": "run",
                        "run": run,
                        "pub": i,
                        "users": users,
                        "rate": rate / len(self.publishers),
                        "duration": duration,
                    }
                )
            pubs = [p.recv(duration * 3 + 30) for p in self.publishers]
            sent_by_user: dict[str, int] = {}
            for reply in pubs:
                for u, c in zip(users, reply["per_user"], strict=True):
                    sent_by_user[u] = sent_by_user.get(u, 0) + c
            expected = sum(sent_by_user.get(u, 0) for u in self.sock_users)
            deadline = time.monotonic() + self.profile.drain_s
            last, last_change = -1, time.monotonic()
            while time.monotonic() < deadline:
                got = self._count()
                if got >= expected:
                    break
                if got != last:
                    last, last_change = got, time.monotonic()
                elif time.monotonic() - last_change > max(1.0, self.profile.drain_s / 3):
                    break
                time.sleep(0.1)
            result.wall_s = sampler.wall()
        stats = [r.call({"op": "stats"}, 60) for r in self.receivers]
        lat = array("d")
        for s in stats:
            lat.frombytes(s["lat"])
        result.latency_ms = summarize(lat)
        result.sent = sum(p["sent"] for p in pubs)
        result.achieved = sum(p["achieved"] for p in pubs)
        result.expected = expected
        result.delivered = len(lat)
        result.lost = sum(max(0, sent_by_user.get(u, 0) - n) for s in stats for u, n in s["unique"])
        result.dups = sum(s["received"] for s in stats) - len(lat)
        result.stale = sum(s["stale"] for s in stats)
        result.drops = sum(s["drops"] for s in stats)
        result.errors = [e for p in pubs for e in p["errors"]][:5]
        usage = sampler.usage
        result.cpu_s = {k: round(u.cpu_s, 3) for k, u in usage.items()}
        if private.current():
            result.redis_calls = {k: list(v) for k, v in services.redis_commandstats().items()}
        server = usage["target"].cpu_s + sum(usage[k].cpu_s for k in self.live.target.services)
        if result.delivered:
            result.cpu_us_per_delivery = server / result.delivered * 1e6
        procs = len(self.receivers) + len(self.publishers)
        result.generator_core_max = usage["generator"].cpu_s / result.wall_s / procs
        return result

    def storm(self) -> dict[str, Any]:
        """Drop every socket at once, reconnect all, then prove each one receives again."""
        for r in self.receivers:
            r.send({"op": "storm", "concurrency": self.profile.connect_concurrency})
        replies = [r.recv(300) for r in self.receivers]
        t_drop = min(x["t_drop"] for x in replies)
        t_all = max(x["t_all"] for x in replies)
        ok = sum(x["ok"] for x in replies)
        probe_rate = min(5000.0, max(200.0, len(self.users) / 2))
        # Each publisher round-robins over every user: long enough for each to reach each user
        # once (one round split over the publishers left half the users without a probe: n/a).
        probe = self.step(probe_rate, len(self.users) * self.profile.publishers / probe_rate)
        stats = [r.call({"op": "stats"}, 60) for r in self.receivers]
        with_msg = sum(s["with_msg"] for s in stats)
        last = max(s["first_ns_max"] for s in stats)
        return {
            "sockets": len(self.sock_users),
            "reconnected": ok,
            "reconnect_s": (t_all - t_drop) / 1e9,
            "receiving": with_msg,
            "recovered_s": (last - t_drop) / 1e9 if with_msg == len(self.sock_users) else math.nan,
            "probe_lost": probe.lost,
            "errors": refusals(replies),
        }

    def close(self) -> None:
        for w in self.publishers + self.receivers:
            w.stop()


def idle(target: Target, profile: Profile, sockets: int) -> dict[str, Any]:
    """Memory per idle socket and connect rate on a fresh target; storm at the largest size."""
    with target.running() as live:
        time.sleep(1)
        rabbit, redis = services.rabbit_pids(), services.redis_pids()
        before = {
            "target": rss_of(live.pids),
            "rabbitmq": rss_of(rabbit),
            "redis": rss_of(redis),
            "redis_used": services.redis_used_memory(),
        }
        receivers = max(2, math.ceil(sockets / 2500))
        harness = Harness(live, profile, receivers)
        try:
            users = [f"i{i}" for i in range(sockets)]
            out: dict[str, Any] = {"connect": harness.connect(users)}
            time.sleep(3)
            after = {
                "target": rss_of(live.pids),
                "rabbitmq": rss_of(rabbit),
                "redis": rss_of(redis),
                "redis_used": services.redis_used_memory(),
            }
            ok = max(1, out["connect"]["ok"])
            out["sockets"] = sockets
            out["kb_per_socket"] = {k: (after[k] - before[k]) / ok / 1024 for k in before}
            out["rss_mb"] = {k: after[k] / 2**20 for k in after}
            if profile.storm and sockets == max(profile.idle):
                out["storm"] = harness.storm()
            return out
        finally:
            harness.close()


def latency(target: Target, profile: Profile) -> dict[str, Any]:
    """Rate sweep at ``profile.sockets`` sockets, then a bisection for the saturation point."""
    steps: list[Step] = []
    with target.running() as live:
        harness = Harness(live, profile, profile.receivers)
        try:
            conn = harness.connect([f"u{i}" for i in range(profile.sockets)])
            for rate in profile.rates:
                step = harness.step(rate, profile.step_s)
                steps.append(step)
                time.sleep(1)
                if (profile.stop_early and not step.passes(profile.p99_limit_ms)) and (
                    step.latency_ms.get("p99", math.inf) > 1000 or step.achieved < 0.8 * rate or step.lost > 0
                ):
                    break  # deeper overload only measures the backlog
            # The saturation point is the highest rate below the first failing one: a
            # lucky pass above a failure (noise from other load on the box) doesn't count.
            hi = min((s.rate for s in steps if not s.passes(profile.p99_limit_ms)), default=math.inf)
            lo = max((s.rate for s in steps if s.rate < hi), default=0.0)
            for _ in range(profile.refine if hi < math.inf else 0):
                mid = round((lo + hi) / 2 / 50) * 50
                if mid in (lo, hi):
                    break
                step = harness.step(mid, profile.step_s)
                steps.append(step)
                time.sleep(1)
                lo, hi = (mid, hi) if step.passes(profile.p99_limit_ms) else (lo, mid)
        finally:
            harness.close()
    return {
        "connect": conn,
        "steps": [asdict(s) for s in sorted(steps, key=lambda s: s.rate)],
        "saturation": {"rate": lo, "bounded_above": hi < math.inf, "next_failing": hi if hi < math.inf else None},
    }


def fanout(target: Target, profile: Profile) -> dict[str, Any]:
    """One topic (one user id) with ``profile.fanout_subs`` sockets, a few publish rates."""
    with target.running() as live:
        harness = Harness(live, profile, profile.receivers)
        try:
            conn = harness.connect(["fan"] * profile.fanout_subs)
            steps = []
            for rate in profile.fanout_rates:
                steps.append(asdict(harness.step(rate, profile.step_s)))
                time.sleep(1)
        finally:
            harness.close()
    return {"connect": conn, "steps": steps}
