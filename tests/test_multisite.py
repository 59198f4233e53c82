"""Two sites: two RabbitMQ nodes federating `notifications` both ways, a hub at each.

The topology of docs/operations.md ("Several sites"): each site has its own RabbitMQ,
Redis and hubs; each site's `notifications` exchange is federated from the other's
(max-hops 1, so nothing loops), so every site's ingest queue receives every
notification and each site sequences it into its own history, with its own offsets.
The nodes are private (their own ports, data and cookie; the shared broker never gets a
plugin); the shipped definitions file is imported into both, so the hubs run as `hub`,
the backends publish as `publisher` and the federation links connect as `federation`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from hub.publisher import Publisher
from testkit.rabbit_node import RabbitNode, start_nodes
from tests.definitions import DEFAULT_NAMES, DEFINITIONS, with_passwords
from tests.distributed_env import REDIS_URL, drop_redis_keys
from tests.harness import RunningHub, run_hub, wait_for

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

NAMES = DEFAULT_NAMES


@dataclass(frozen=True)
class Sites:
    a: RabbitNode
    b: RabbitNode
    passwords: dict[str, str]

    def url(self, node: RabbitNode, user: str) -> str:
        return node.amqp_url(user, self.passwords[user])


def site_definitions(upstream: RabbitNode, passwords: dict[str, str]) -> dict[str, Any]:
    """The shipped definitions with passwords set, and `notifications` federated from ``upstream``."""
    definitions = with_passwords(passwords)
    uri = f"amqp://federation:{passwords['federation']}@127.0.0.1:{upstream.amqp_port}"
    definitions["parameters"] = [
        {
            "vhost": "/",
            "component": "federation-upstream",
            "name": "other-site",
            "value": {"uri": uri, "max-hops": 1, "ack-mode": "on-confirm"},
        }
    ]
    definitions["policies"] = [
        {
            "vhost": "/",
            "name": "federate-notifications",
            "pattern": "^notifications$",
            "apply-to": "exchanges",
            "priority": 0,
            "definition": {"federation-upstream-set": "all"},
        }
    ]
    return definitions


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    base = tmp_path_factory.mktemp("sites")
    # rabbitmq_prometheus too: the alert rules' RabbitMQ metrics are checked on a real scrape
    nodes = start_nodes(base, ["a", "b"], plugins=["rabbitmq_federation", "rabbitmq_prometheus"])
    try:
        passwords = {user: uuid.uuid4().hex for user in ("hub", "publisher", "federation")}
        a, b = nodes
        for node, upstream in ((a, b), (b, a)):
            path = base / f"{node.name}.json"
            path.write_text(json.dumps(site_definitions(upstream, passwords)))
            node.ctl("import_definitions", str(path))  # as an operator loads the shipped file
        yield Sites(a, b, passwords)
    finally:
        for node in nodes:
            node.stop()


def test_the_definitions_file_loads_as_shipped(sites: Sites) -> None:
    permissions = {
        line.split("\t")[0]: line.split("\t")[1:]
        for line in sites.a.ctl("list_permissions", "-p", "/", "--no-table-headers").splitlines()
    }
    definitions = json.loads(DEFINITIONS.read_text())
    shipped = {p["user"]: [p["configure"], p["write"], p["read"]] for p in definitions["permissions"]}
    for user, patterns in shipped.items():
        assert permissions[user] == patterns


@pytest.fixture
async def site_hubs(sites: Sites) -> AsyncIterator[tuple[RunningHub, RunningHub]]:
    tag = uuid.uuid4().hex[:8]
    prefixes = [f"hubtest:site-a:{tag}:", f"hubtest:site-b:{tag}:"]
    envs = [
        {"HUB_AMQP_URL": sites.url(node, "hub"), "HUB_REDIS_URL": REDIS_URL, "HUB_REDIS_PREFIX": prefix, **NAMES}
        for node, prefix in zip((sites.a, sites.b), prefixes, strict=True)
    ]
    try:
        async with (
            run_hub("distributed", env=envs[0], replica_id="site-a") as hub_a,
            run_hub("distributed", env=envs[1], replica_id="site-b") as hub_b,
        ):
            yield hub_a, hub_b
    finally:
        for prefix in prefixes:
            await drop_redis_keys(prefix)


async def links_running(sites: Sites) -> bool:
    """Both federation links are up (each site's upstream link to the other)."""
    for node in (sites.a, sites.b):
        status = node.ctl("eval", "[proplists:get_value(status, S) || S <- rabbit_federation_status:status()].")
        if "running" not in status:
            return False
    return True


async def test_a_notification_published_at_one_site_reaches_a_user_at_the_other(
    sites: Sites, site_hubs: tuple[RunningHub, RunningHub]
) -> None:
    hub_a, hub_b = site_hubs
    await wait_for(lambda: links_running(sites), timeout=30, what="both federation links to run")
    at_a = await hub_a.connect("traveller")
    at_b = await hub_b.connect("traveller")
    async with (
        Publisher(sites.url(sites.a, "publisher")) as publisher_a,
        Publisher(sites.url(sites.b, "publisher")) as publisher_b,
    ):
        # the links bind asynchronously after they start: probe until site B's socket hears site A
        probes = 0

        async def crossed() -> bool:
            nonlocal probes
            probes += 1
            await publisher_a.publish("traveller", {"probe": probes}, message_id=f"probe-{probes}")
            try:
                frame = await at_b.recv(0.5)
            except TimeoutError:
                return False
            return frame["type"] == "notification"

        await wait_for(crossed, timeout=30, what="a notification from site A at site B")

        # drain what the probes left on both sockets, then the real exchange
        async def drain() -> None:
            for client in (at_a, at_b):
                while True:
                    try:
                        await client.recv(0.5)
                    except TimeoutError:
                        break

        await drain()
        await publisher_a.publish("traveller", "from A", message_id="from-a")
        await publisher_b.publish("traveller", "from B", message_id="from-b")
        got_a = {n["id"]: n for n in await at_a.notifications(2)}
        got_b = {n["id"]: n for n in await at_b.notifications(2)}
        assert set(got_a) == set(got_b) == {"from-a", "from-b"}
        assert got_a["from-a"]["data"] == got_b["from-a"]["data"] == "from A"
        assert got_a["from-b"]["data"] == got_b["from-b"]["data"] == "from B"
        # each site sequenced both into its own history: offsets are per site
        for hub, got in ((hub_a, got_a), (hub_b, got_b)):
            history = hub.node.backend.history
            assert history is not None
            read = (await history.read({"user.traveller": "0-0"}))["user.traveller"]
            stored = {n.id: n.offset for n in read.notifications}
            assert stored["from-a"] == got["from-a"]["offset"]
            assert stored["from-b"] == got["from-b"]["offset"]
        # exactly once per site: nothing federated back and forth (max-hops 1)
        await at_a.expect_silence(0.5)
        await at_b.expect_silence(0.2)
    await at_a.close()
    await at_b.close()


async def test_the_rabbitmq_metrics_the_alerts_and_dashboard_name_exist(sites: Sites) -> None:
    """docker/prometheus/alerts.yml and the dashboard name rabbitmq_* series: a real
    rabbitmq_prometheus (this RabbitMQ version) must export each of them."""
    import httpx

    from tests.test_alerts import alert_rules, dashboard_queries, metric_names

    assert sites.a.prometheus_port is not None
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{sites.a.prometheus_port}/metrics")).text
    exported = set(re.findall(r"^([a-z_]+)(?:\{| )", text, re.M))
    named = metric_names([rule["expr"] for rule in alert_rules()] + dashboard_queries())
    rabbitmq = {name for name in named if name.startswith("rabbitmq_")}
    assert rabbitmq, "expected the rules to watch RabbitMQ"
    assert rabbitmq <= exported, f"not exported by rabbitmq_prometheus: {sorted(rabbitmq - exported)}"


async def test_a_user_moving_to_the_other_site_is_told_to_refetch_and_is_never_muted(
    sites: Sites, site_hubs: tuple[RunningHub, RunningHub]
) -> None:
    """Offsets are per site: site B cannot resume from site A's offset. It says so
    (``recovered: false``, its own latest offsets), replays no guess, and delivers what
    comes next, also when A's offset is ahead of everything B issued."""
    hub_a, hub_b = site_hubs
    await wait_for(lambda: links_running(sites), timeout=30, what="both federation links to run")
    topic = "user.mover"
    async with Publisher(sites.url(sites.a, "publisher")) as publisher_a:
        at_a = await hub_a.connect("mover")
        at_b_watch = await hub_b.connect("mover")  # to know when B has what A has
        for n in range(3):
            await publisher_a.publish("mover", {"n": n}, message_id=f"mover-{n}")
        seen_at_a = await at_a.notifications(3, timeout=30)
        await at_b_watch.notifications(3, timeout=30)
        history_b = hub_b.node.backend.history
        assert history_b is not None
        # Both sites' Redis streams share this machine's clock: an offset of A can, rarely,
        # equal one of B's (same millisecond, same sequence), and is then taken for B's own
        # (docs/operations.md §7). Publish until A's latest offset is not one of B's.
        for extra in range(5):
            b_offsets = {n.offset for n in (await history_b.read({topic: "0-0"}))[topic].notifications}
            if seen_at_a[-1]["offset"] not in b_offsets:
                break
            await publisher_a.publish("mover", {"extra": extra}, message_id=f"mover-extra-{extra}")
            seen_at_a += await at_a.notifications(1, timeout=30)
            await at_b_watch.notifications(1, timeout=30)
        since = {topic: seen_at_a[-1]["offset"]}  # what a client of site A holds
        assert since[topic] not in b_offsets
        await at_a.close()
        b_latest = (await history_b.latest([topic]))[topic]

        # the move: the client reconnects at site B with site A's offset
        moved = await hub_b.connect("mover", since=since)
        assert moved.connected["recovered"] is False
        assert moved.connected["offsets"] == {topic: b_latest}
        await moved.expect_silence(0.5)  # no replay of B's copies of what A delivered
        await publisher_a.publish("mover", "after the move", message_id="mover-after")
        (frame,) = await moved.notifications(1, timeout=30)
        assert frame["data"] == "after the move"
        await moved.close()

        # an offset ahead of every offset of site B (A's clock or sequence ran ahead)
        ahead = f"{int(b_latest.split('-')[0]) + 600_000}-0"
        ahead_client = await hub_b.connect("mover", since={topic: ahead})
        assert ahead_client.connected["recovered"] is False
        assert ahead_client.connected["offsets"] == {topic: (await history_b.latest([topic]))[topic]}
        await publisher_a.publish("mover", "not muted", message_id="mover-not-muted")
        (frame,) = await ahead_client.notifications(1, timeout=30)
        assert frame["data"] == "not muted"
        await ahead_client.close()
        await at_b_watch.close()
