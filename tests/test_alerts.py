"""The operator kit's Prometheus side: alert rules, their unit tests, the Grafana dashboard.

``promtool`` (Debian package ``prometheus``, installed by scripts/setup.sh) checks the
rules and the example configuration and runs the rules' unit tests. The dashboard's
queries are checked by the same parser (as recording rules), and every hub metric the
rules and the dashboard name must exist at a real hub's ``/metrics``
(tests/test_metrics.py checks the RabbitMQ ones against a real rabbitmq_prometheus).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.services import missing

PROMETHEUS = Path(__file__).parent.parent / "docker" / "prometheus"
DASHBOARD = Path(__file__).parent.parent / "docker" / "grafana" / "hub-dashboard.json"
METRIC = re.compile(r"\b((?:hub|rabbitmq|process|python)_[a-z0-9_]+)")


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        missing("promtool (Debian package prometheus)")
    result = subprocess.run([tool, *args], cwd=cwd, capture_output=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def alert_rules() -> list[dict[str, str]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def metric_names(queries: list[str]) -> set[str]:
    return {name for query in queries for name in METRIC.findall(query)}


def test_the_alert_rules_and_the_prometheus_config_check() -> None:
    assert "SUCCESS: 9 rules found" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


def test_the_alert_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")


def test_the_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule that no longer fires as its test expects makes ``promtool test rules`` fail."""
    broken = (
        (PROMETHEUS / "alerts.yml")
        .read_text()
        .replace("increase(hub_dead_letters_total[10m])) > 0", "increase(hub_dead_letters_total[10m])) > 100")
    )
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(PROMETHEUS / "alerts.test.yml", tmp_path)
    result = subprocess.run(
        [shutil.which("promtool") or "promtool", "test", "rules", "alerts.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert result.returncode != 0
    assert b"HubDeadLetters" in result.stdout + result.stderr


def test_the_alerts_cover_what_the_issue_asks() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names == {
        "HubIngestBacklogGrowing",
        "HubNoActiveSequencer",
        "HubDeadLetters",
        "HubRedisRetries",
        "HubOverflowCloses",
        "HubDeliveryLatencyHigh",
        "HubReplicaNotReady",
        "RabbitMQMemoryAlarm",
        "RabbitMQDiskAlarm",
    }
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_the_dashboard_queries_parse_and_show_every_alerted_signal(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    rules = {
        "groups": [{"name": "dashboard", "rules": [{"record": f"q:{i}", "expr": q} for i, q in enumerate(queries)]}]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(queries)} rules found" in promtool("check", "rules", "queries.yml", cwd=tmp_path)
    alerted = metric_names([rule["expr"] for rule in alert_rules()])
    missing_signals = alerted - metric_names(queries)
    assert not missing_signals, f"alerted on but not on the dashboard: {sorted(missing_signals)}"


@pytest.mark.distributed
async def test_every_hub_metric_the_rules_and_dashboard_name_exists() -> None:
    from tests.harness import run_hub
    from tests.test_metrics import exported

    async with run_hub("distributed") as hub:
        await hub.publish("metrics-user", "something to count")
        await hub.node.monitor.look()  # the gauges that need a round trip (hub.ingest's length)
        text = (await hub.http.get("/metrics")).text
    names = exported(text) | {f"{name}_bucket" for name in exported(text)}
    named = metric_names([rule["expr"] for rule in alert_rules()] + dashboard_queries())
    hub_names = {name for name in named if not name.startswith("rabbitmq_")}
    assert hub_names - names == set(), f"named by rules or dashboard, not exported: {sorted(hub_names - names)}"
