"""The HTTP API (DESIGN.md §4, §6, §7): publish, presence, health, readiness, metrics."""

from __future__ import annotations

import pytest

from tests.harness import RunningHub, run_hub


async def test_publish_requires_the_api_key(hub: RunningHub) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        response = await hub.api("POST", "/api/publish", json={"user": "1", "data": 1}, headers=headers)
        assert response.status_code == 401
        assert "Bearer" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"user": "a.b", "data": 1},
        {"user": "*", "data": 1},
        {"user": "#", "data": 1},
        {"user": "", "data": 1},
        {"user": "x" * 129, "data": 1},
        {"user": 42, "data": 1},
        {"topic": "team.*", "data": 1},
        {"topic": "a..b", "data": 1},
        {"user": "1", "topic": "t", "data": 1},
        {"data": 1},
        {"user": "1"},
        {"user": "1", "data": 1, "id": ""},
        {"user": "1", "data": 1, "id": 5},
        {"user": "1", "data": 1, "ttl": -1},
        {"user": "1", "data": 1, "ttl": True},
        [1, 2],
    ],
)
async def test_publish_refuses_bad_bodies(hub: RunningHub, body: object) -> None:
    response = await hub.api("POST", "/api/publish", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


async def test_publish_refuses_unreadable_json(hub: RunningHub) -> None:
    response = await hub.api("POST", "/api/publish", content=b"{nope")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


async def test_publish_refuses_huge_bodies(hub: RunningHub) -> None:
    response = await hub.api("POST", "/api/publish", content=b"x" * 1_100_000)
    assert response.status_code == 413


async def test_publish_answers_the_id(hub: RunningHub) -> None:
    answer = await hub.publish("1", {"a": 1}, id="abc")
    assert answer["id"] == "abc"
    assert answer["topic"] == "user.1"


async def test_presence_api(hub: RunningHub) -> None:
    client = await hub.connect("p1")
    body = (await hub.api("GET", "/api/presence/p1")).json()
    assert body == {"user": "p1", "online": True, "connections": 1}
    bulk = (await hub.api("GET", "/api/presence", params={"user": "p1,p2"})).json()
    assert bulk == {"users": {"p1": {"online": True, "connections": 1}, "p2": {"online": False, "connections": 0}}}
    assert (await hub.api("GET", "/api/presence/a.b")).status_code == 400
    assert (await hub.api("GET", "/api/presence", params={"user": "*"})).status_code == 400
    assert (await hub.api("GET", "/api/presence")).status_code == 400
    assert (await hub.api("GET", "/api/presence/p1", headers={"Authorization": ""})).status_code == 401
    await client.close()


async def test_health_and_readiness(hub: RunningHub) -> None:
    assert (await hub.http.get("/healthz")).json()["status"] == "ok"
    ready = await hub.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    hub.node.draining = True
    not_ready = await hub.http.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["draining"]
    hub.node.draining = False


async def test_metrics_count_what_happens(hub: RunningHub) -> None:
    client = await hub.connect("m1")
    await hub.publish("m1", "x")
    await client.notifications(1)
    bad = await hub.connect(token="nope", expect_connected=False)
    await bad.closed()
    text = (await hub.http.get("/metrics")).text
    assert "hub_connections 1.0" in text
    assert 'hub_notifications_in_total{source="http"} 1.0' in text
    assert "hub_notifications_out_total 1.0" in text
    assert "hub_delivery_latency_seconds_count 1.0" in text
    assert 'hub_auth_failures_total{code="4001"} 1.0' in text
    assert 'hub_closes_total{code="4001"} 1.0' in text
    assert "hub_overflows_total 0.0" in text
    if hub.backend == "distributed":
        assert "hub_sequenced_total 1.0" in text
        assert "hub_ingest_lag_seconds" in text
    await client.close()


async def test_demo_endpoints_only_when_enabled() -> None:
    async with run_hub("memory") as hub:  # embedded: demo on by default
        token = (await hub.http.get("/demo/token", params={"user": "7"})).json()["token"]
        client = await hub.connect(token=token)
        answer = (await hub.http.post("/demo/publish", json={"user": "7", "data": "demo"})).json()
        [frame] = await client.notifications(1)
        assert frame["id"] == answer["id"]
        assert (await hub.http.get("/demo/presence/7")).json()["connections"] == 1
        assert (await hub.http.get("/demo/token", params={"user": "a.b"})).status_code == 400
        await client.close()
    async with run_hub("memory", demo=False) as hub:
        assert (await hub.http.get("/demo/token", params={"user": "7"})).status_code == 404
