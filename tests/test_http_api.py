"""The HTTP API (docs/protocol.md §4, §6, §7, §8): publish, presence, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest

from hub.backends.base import BackendUnavailable
from hub.http_api import MAX_BODY
from tests.harness import API_KEY, TIMEOUT, RunningHub, run_hub


@pytest.fixture
async def hub_memory() -> AsyncIterator[RunningHub]:
    """One embedded replica, for what does not depend on the backend (the HTTP edge itself)."""
    async with run_hub("memory") as running:
        yield running


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
    assert "hub_live_queue_overflows_total 0.0" in text
    if hub.backend == "distributed":
        assert "hub_sequenced_total 1.0" in text
        assert "hub_ingest_lag_seconds" in text
    await client.close()


async def test_demo_endpoints_only_with_development_credentials() -> None:
    dev_credentials = {"HUB_JWT_SECRET": "", "HUB_API_KEY": ""}
    async with run_hub("memory", env=dev_credentials) as hub:  # embedded on development credentials: demo on
        token = (await hub.http.get("/demo/token", params={"user": "7"})).json()["token"]
        client = await hub.connect(token=token)
        answer = (await hub.http.post("/demo/publish", json={"user": "7", "data": "demo"})).json()
        [frame] = await client.notifications(1)
        assert frame["id"] == answer["id"]
        assert (await hub.http.get("/demo/presence/7")).json()["connections"] == 1
        assert (await hub.http.get("/demo/token", params={"user": "a.b"})).status_code == 400
        await client.close()
    async with run_hub("memory") as hub:  # real secret and key: the demo would give them away
        assert (await hub.http.get("/demo/token", params={"user": "7"})).status_code == 404
        assert (await hub.http.post("/demo/publish", json={"user": "7", "data": "x"})).status_code == 404
        assert (await hub.http.get("/demo/")).status_code == 404
    async with run_hub("memory", env=dev_credentials, demo=False) as hub:
        assert (await hub.http.get("/demo/token", params={"user": "7"})).status_code == 404


async def test_demo_with_real_credentials_only_when_asked_and_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hub.startup"):
        async with run_hub("memory", demo=True) as hub:
            token = (await hub.http.get("/demo/token", params={"user": "7"})).json()["token"]
            client = await hub.connect(token=token)
            await client.close()
    assert any("HUB_DEMO=1" in record.getMessage() for record in caplog.records)


# --- bodies: bounded while streaming, parsed strictly (docs/protocol.md §8)

HEAD = (
    "POST /api/publish HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {key}\r\n"
    "Content-Type: application/json\r\n{framing}\r\n"
)


async def read_response_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines if line)
    return int(status_line.split()[1]), headers


async def test_a_declared_oversize_body_is_refused_before_it_is_sent(hub_memory: RunningHub) -> None:
    hub = hub_memory
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        writer.write(HEAD.format(key=API_KEY, framing="Content-Length: 104857600\r\n").encode())
        await writer.drain()
        status, headers = await read_response_head(reader)  # not one byte of the body was sent
        assert status == 413
        body = json.loads(await reader.readexactly(int(headers["content-length"])))
        assert "104857600" in body["error"]
    finally:
        writer.close()
    await assert_still_serving(hub)


async def test_a_streamed_oversize_body_is_refused_while_it_streams(hub_memory: RunningHub) -> None:
    hub = hub_memory
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        writer.write(HEAD.format(key=API_KEY, framing="Transfer-Encoding: chunked\r\n").encode())
        chunk = b"x" * 65_536
        for _ in range(2 * MAX_BODY // len(chunk)):  # 2 MiB of a body that never ends
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        status, _ = await read_response_head(reader)  # the client is still mid-body
        assert status == 413
    finally:
        writer.close()
    await assert_still_serving(hub)


async def test_a_body_of_exactly_the_limit_is_read(hub_memory: RunningHub) -> None:
    hub = hub_memory
    frame = b'{"user":"lim","data":"%s"}'
    body = frame % (b"x" * (MAX_BODY - len(frame) + 2))
    assert len(body) == MAX_BODY
    assert (await hub.api("POST", "/api/publish", content=body)).status_code == 200
    assert (await hub.api("POST", "/api/publish", content=body + b" ")).status_code == 413


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


#: (body, a word the 400's message must contain)
HOSTILE_BODIES = [
    (b'{"user":"v","data":NaN}', "finite"),
    (b'{"user":"v","data":[1,Infinity]}', "finite"),
    (b'{"user":"v","data":{"t":-Infinity}}', "finite"),
    (b'{"user":"v","data":"cut emoji \\ud83d"}', "surrogate"),
    (b'{"user":"v","data":{"\\udfff":1}}', "surrogate"),
    (b'{"user":"v","data":' + _deep(32) + b"}", "nested"),
    (b'{"user":"v","data":' + _deep(3000) + b"}", "nested"),
    (b'{"user":"v","data":1,"id":"' + "\U0001f600".encode() * 64 + b'"}', "255"),
    (b'{"user":"v","data":1,"id":"a\\u0000b"}', "control"),
    (b'{"user":"v","data":1,"ttl":1e12}', "ttl"),
    (b'{"user":"v","data":1,"ttl":0}', "ttl"),
    (b'{"user":"v","data":1,"ttl":"60"}', "ttl"),
    (b'{"user":"v","data":1,"ttl":1e999}', "finite"),
    (b"\xff\xfe{}", "utf-8"),
    (b'{"user":"v","data":1} trailing', "json"),
]


async def test_hostile_bodies_are_400_and_everyone_keeps_being_served(hub: RunningHub) -> None:
    victim, bystander = await hub.connect("v"), await hub.connect("b")
    for body, word in HOSTILE_BODIES:
        response = await hub.api("POST", "/api/publish", content=body)
        assert response.status_code == 400, (body[:60], response.text)
        assert word in response.json()["error"].lower(), (body[:60], response.json())
    # The limits' other side: accepted, and delivered to the very user the bad requests named.
    deepest = json.loads(_deep(31))  # the body object is level 1
    await hub.publish("v", deepest)
    await hub.publish("v", "emoji id", id="\U0001f600" * 63)  # 252 UTF-8 bytes
    await hub.publish("v", "a week", ttl=7 * 86_400)
    await hub.publish("b", "still here")
    got = await victim.notifications(3)
    assert [n["data"] for n in got] == [deepest, "emoji id", "a week"]
    assert got[1]["id"] == "\U0001f600" * 63
    assert [n["data"] for n in await bystander.notifications(1)] == ["still here"]
    await victim.close()
    await bystander.close()


async def test_an_unexpected_failure_is_a_json_500(hub_memory: RunningHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = hub_memory

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise BackendUnavailable("RabbitMQ did not confirm")

    monkeypatch.setattr(hub.node, "publish", broken)
    response = await hub.api("POST", "/api/publish", json={"user": "1", "data": 1})
    assert response.status_code == 500
    assert "RuntimeError" in response.json()["error"]
    monkeypatch.setattr(hub.node, "publish", unavailable)
    response = await hub.api("POST", "/api/publish", json={"user": "1", "data": 1})
    assert response.status_code == 503
    assert "try again" in response.json()["error"]
    monkeypatch.setattr(hub.node.backend.presence, "count", broken)
    response = await hub.api("GET", "/api/presence/1")
    assert response.status_code == 500
    assert response.json()["error"]


async def assert_still_serving(hub: RunningHub) -> None:
    client = await hub.connect("after")
    await hub.publish("after", "served")
    [frame] = await client.notifications(1)
    assert frame["data"] == "served"
    await client.close()
