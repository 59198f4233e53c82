"""``/metrics`` is what docs/protocol.md §7 says it is, no more and no less."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import RunningHub, run_hub, wait_for

PROTOCOL = Path(__file__).parent.parent / "docs" / "protocol.md"


def documented() -> dict[str, bool]:
    """Metric name → whether it is documented as distributed-only, from the §7 table."""
    rows = re.findall(r"^\s*\| `(hub_[a-z_]+)(?:\{[a-z_]+\})?` \| \w+ \| (.*) \|$", PROTOCOL.read_text(), re.M)
    assert len(rows) >= 20, "expected the metrics table in docs/protocol.md §7"
    return {name: meaning.startswith("distributed:") for name, meaning in rows}


def exported(text: str) -> set[str]:
    """The metric names a scrape holds, as PromQL names them (counters with ``_total``)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


async def scrape(hub: RunningHub) -> str:
    return (await hub.http.get("/metrics")).text


@pytest.mark.distributed
async def test_a_distributed_replica_exports_exactly_the_documented_metrics() -> None:
    async with run_hub("distributed") as hub:
        client = await hub.connect("metrics")
        await hub.publish("metrics", "one")
        await client.notifications(1)
        # the monitor's first look (at start) fills the gauges that need a round trip
        text = await wait_for(lambda: _with(scrape(hub), "hub_ingest_backlog"), what="hub_ingest_backlog in /metrics")
        await client.close()
    names = exported(text)
    hub_names = {name for name in names if name.startswith("hub_")}
    assert hub_names == set(documented()), (
        f"exported, not documented: {sorted(hub_names - set(documented()))}; "
        f"documented, not exported: {sorted(set(documented()) - hub_names)}"
    )
    assert {"process_cpu_seconds_total", "process_open_fds", "process_resident_memory_bytes"} <= names
    assert {"python_info", "python_gc_collections_total"} <= names
    assert "_created" not in text
    assert re.search(r"^hub_ready 1\.0$", text, re.M)
    assert re.search(r"^hub_ingest_consumers 1\.0$", text, re.M)  # this replica's sequencer


async def _with(text: object, needle: str) -> str | None:
    value = await text  # type: ignore[misc]
    assert isinstance(value, str)
    return value if needle in value else None


async def test_an_embedded_replica_exports_the_documented_metrics_that_are_not_distributed_only() -> None:
    async with run_hub("memory") as hub:
        text = await wait_for(lambda: _with(scrape(hub), "hub_ready 1.0"), what="hub_ready 1.0 in /metrics")
    hub_names = {name for name in exported(text) if name.startswith("hub_")}
    expected = {name for name, distributed in documented().items() if not distributed}
    assert hub_names == expected
    assert "_created" not in text
