"""The SSE transport (docs/protocol.md §10) on every backend: the same protocol as ``/ws``
as Server-Sent Events, tickets, client frames by POST, and every refusal a clear status."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from hub.sse import event_id, parse_event_id
from hub.sse_relay import make_handle, split_handle
from tests.distributed_env import environment
from tests.harness import RunningHub, make_token, run_hub, wait_for
from tests.sse_client import Stream, open_stream, ticket

pytestmark = pytest.mark.contract


async def test_receives_connected_and_notifications(hub: RunningHub) -> None:
    async with open_stream(hub.http, hub.token("42")) as stream:
        assert set(stream.hello) == {"stream", "post", "secret"}
        connected = await stream.frame()
        assert connected["type"] == "connected"
        assert connected["user"] == "42"
        assert connected["topics"] == ["user.42"]
        answer = await hub.publish("42", {"text": "hi"})
        [frame] = await stream.notifications(1)
        assert frame["id"] == answer["id"]
        assert frame["data"] == {"text": "hi"}
        if hub.history:
            assert stream.last_id == f"user.42:{frame['offset']}"


async def test_last_event_id_resumes_exactly_once_in_order(history_hub: RunningHub) -> None:
    hub = history_hub
    async with open_stream(hub.http, hub.token("42")) as stream:
        await stream.frame()
        await hub.publish("42", {"n": 0})
        await stream.notifications(1)
        last = stream.last_id
    assert last is not None
    for n in range(1, 4):
        await hub.publish("42", {"n": n})
    async with open_stream(hub.http, hub.token("42"), last_event_id=last) as stream:
        connected = await stream.frame()
        assert connected["recovered"] is True
        frames = await stream.notifications(3)
        assert [f["data"]["n"] for f in frames] == [1, 2, 3]
        await hub.publish("42", {"n": 4})
        [live] = await stream.notifications(1)
        assert live["data"] == {"n": 4}  # nothing replayed twice: the next one is the live one


async def test_pings_are_comments_and_keep_the_stream_open(backend_name: str) -> None:
    async with run_hub(backend_name, ping_interval=0.2) as hub, open_stream(hub.http, hub.token("42")) as stream:
        await stream.frame()
        comments = 0
        while comments < 4:  # four intervals: twice the silence a WebSocket client may keep
            event = await stream.next()
            assert event.event == "comment", event
            assert event.data == "ping"
            comments += 1


async def test_ticket_is_single_use_and_refusals_are_401(hub: RunningHub) -> None:
    value = await ticket(hub.http, hub.token("42"))
    async with hub.http.stream("GET", "/sse", params={"ticket": value}) as response:
        assert response.status_code == 200
    reused = await hub.http.get("/sse", params={"ticket": value})
    assert reused.status_code == 401
    assert "already used" in reused.json()["error"]
    forged = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
    answer = await hub.http.get("/sse", params={"ticket": forged})
    assert answer.status_code == 401
    assert "forged" in answer.json()["error"]
    for bad in ("", "x", "1.2", "99999999999999999999.a.b"):
        assert (await hub.http.get("/sse", params={"ticket": bad})).status_code == 401
    none = await hub.http.get("/sse")
    assert none.status_code == 401


async def test_expired_ticket_is_refused(backend_name: str) -> None:
    async with run_hub(backend_name, sse_ticket_ttl=0.2) as hub:
        value = await ticket(hub.http, hub.token("42"))
        expires = int(value.split(".")[0]) / 1000
        await wait_for(lambda: time.time() > expires, what="the ticket to expire")
        answer = await hub.http.get("/sse", params={"ticket": value})
        assert answer.status_code == 401
        assert "expired" in answer.json()["error"]


async def test_ticket_needs_a_valid_token(hub: RunningHub) -> None:
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}):
        answer = await hub.http.post("/sse/ticket", headers=headers)
        assert answer.status_code == 401, answer.text
    expired = await hub.http.post("/sse/ticket", headers={"Authorization": f"Bearer {make_token('42', ttl=-60)}"})
    assert expired.status_code == 401
    assert expired.json()["code"] == 4009


async def test_refresh_by_post_and_bad_posts(hub: RunningHub) -> None:
    async with open_stream(hub.http, hub.token("42")) as mine, open_stream(hub.http, hub.token("7")) as theirs:
        await mine.frame()
        await theirs.frame()
        answer = await mine.post(hub.http, {"type": "refresh", "token": hub.token("42", ttl=600)})
        assert answer.status_code == 202, answer.text
        # another user's stream: my secret does not open it
        assert (await theirs.post(hub.http, {"type": "pong"}, secret=mine.hello["secret"])).status_code == 403
        no_auth = await hub.http.post(theirs.hello["post"], content="{}")
        assert no_auth.status_code == 401
        big = "x" * (hub.settings.max_frame_size + 1)
        assert (await mine.post(hub.http, big)).status_code == 413
        unknown = await hub.http.post("/sse/nope", content="{}", headers={"Authorization": "Bearer x"})
        assert unknown.status_code == 404
        # the stream still works after all that
        await hub.publish("42", {"ok": True})
        [frame] = await mine.notifications(1)
        assert frame["data"] == {"ok": True}
        # a frame the session cannot read closes the stream as a WebSocket would be (4002)
        assert (await mine.post(hub.http, "{not json")).status_code == 202
        error = await mine.frame()
        assert error["type"] == "error"
        assert error["code"] == 4002
        close = await mine.frame()
        assert close["type"] == "close"
        assert close["code"] == 4002
        assert error["message"].startswith(close["reason"])  # cut to 123 bytes, as a close reason
        with pytest.raises(EOFError):
            await mine.next()

        async def ended() -> bool:  # a POST to the ended stream: 404 once it is torn down
            return (await mine.post(hub.http, {"type": "pong"})).status_code == 404

        await wait_for(ended, what="POSTs to the ended stream to be refused")


async def test_refresh_for_another_user_closes_4001(hub: RunningHub) -> None:
    async with open_stream(hub.http, hub.token("42")) as stream:
        await stream.frame()
        assert (await stream.post(hub.http, {"type": "refresh", "token": hub.token("7")})).status_code == 202
        error = await stream.frame()
        assert error["code"] == 4001
        assert (await stream.frame())["code"] == 4001


async def test_refused_before_open_is_an_http_status(backend_name: str) -> None:
    async with run_hub(backend_name, max_connections_per_user=1) as hub:
        async with open_stream(hub.http, hub.token("42")) as first:
            await first.frame()
            async with open_stream(hub.http, hub.token("42"), expect=429) as second:
                assert "limit" in (await second.response.aread()).decode()
        bad = await ticket(hub.http, hub.token("42"))
        answer = await hub.http.get("/sse", params={"ticket": bad}, headers={"Last-Event-ID": "user.7:1-0"})
        assert answer.status_code == 403  # a since for a topic the token does not grant: 4003
        bad = await ticket(hub.http, hub.token("42"))
        answer = await hub.http.get("/sse", params={"ticket": bad}, headers={"Last-Event-ID": "user.42:nope"})
        assert answer.status_code == 400
        bad = await ticket(hub.http, hub.token("42"))
        answer = await hub.http.get("/sse", params={"ticket": bad}, headers={"Last-Event-ID": "garbage"})
        assert answer.status_code == 400


async def test_presence_counts_streams(hub: RunningHub) -> None:
    async with open_stream(hub.http, hub.token("42")) as stream:
        await stream.frame()
        answer = await hub.api("GET", "/api/presence/42")
        assert answer.json()["connections"] == 1

    async def gone() -> bool:
        return (await hub.api("GET", "/api/presence/42")).json()["connections"] == 0

    await wait_for(gone, what="the stream to leave presence")


async def test_drain_ends_streams_with_1012(hub: RunningHub) -> None:
    async with open_stream(hub.http, hub.token("42")) as stream:
        await stream.frame()
        drain = asyncio.create_task(hub.node.drain(0))
        error = await stream.frame()
        assert error["type"] == "error"
        assert error["code"] == 1012
        close = await stream.frame()
        assert close["type"] == "close"
        assert close["code"] == 1012
        await drain
    value = await ticket(hub.http, hub.token("42"))
    assert (await hub.http.get("/sse", params={"ticket": value})).status_code == 503


async def test_tickets_and_posts_work_across_replicas() -> None:
    """Distributed: a ticket from replica B opens a stream on A; a POST through B reaches it."""
    async with (
        environment() as env,
        run_hub("distributed", env=env) as a,
        run_hub("distributed", env=env) as b,
    ):
        value = await ticket(b.http, b.token("42"))
        async with a.http.stream("GET", "/sse", params={"ticket": value}) as response:
            assert response.status_code == 200
            stream = Stream(response, str(a.http.base_url))
            stream.hello = (await stream.next()).json()
            assert (await stream.frame())["replica"] == a.settings.replica_id
            reused = await b.http.get("/sse", params={"ticket": value})
            assert reused.status_code == 401  # used on A: gone for B too
            ok = await stream.post(b.http, {"type": "refresh", "token": b.token("42", ttl=900)})
            assert ok.status_code == 202
            routed = await stream.post(b.http, {"type": "refresh", "token": b.token("7")})
            assert routed.status_code == 202
            assert (await stream.frame())["code"] == 4001  # B routed it to A, whose session refused it
            forged = await stream.post(b.http, {"type": "pong"}, secret="0" * 43)
            assert forged.status_code == 403


async def test_cross_origin_pages_get_cors_and_preflights(hub: RunningHub) -> None:
    origin = {"Origin": "https://app.example"}
    for path in ("/sse", "/sse/ticket", "/sse/abc.def"):
        answer = await hub.http.options(path, headers={**origin, "Access-Control-Request-Method": "POST"})
        assert answer.status_code == 204, path
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        assert "last-event-id" in answer.headers["access-control-allow-headers"]
    issued = await hub.http.post("/sse/ticket", headers={**origin, "Authorization": f"Bearer {hub.token('42')}"})
    assert issued.headers["access-control-allow-origin"] == "https://app.example"
    value = issued.json()["ticket"]
    async with hub.http.stream("GET", "/sse", params={"ticket": value}, headers=origin) as response:
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"


async def test_origin_outside_the_allow_list_is_refused() -> None:
    async with run_hub("memory", allowed_origins=("https://good.example",)) as hub:
        bad = {"Origin": "https://evil.example"}
        assert (await hub.http.options("/sse", headers=bad)).status_code == 403
        answer = await hub.http.post("/sse/ticket", headers={**bad, "Authorization": f"Bearer {hub.token('42')}"})
        assert answer.status_code == 403
        value = await ticket(hub.http, hub.token("42"))
        assert (await hub.http.get("/sse", params={"ticket": value}, headers=bad)).status_code == 403


async def test_frame_rate_over_posts_closes_4008(backend_name: str) -> None:
    async with run_hub(backend_name, max_frame_rate=1.0) as hub, open_stream(hub.http, hub.token("42")) as stream:
        await stream.frame()
        for _ in range(4):  # a burst of twice the rate is allowed; the third frame is over it
            answer = await stream.post(hub.http, {"type": "pong"})
            assert answer.status_code in (202, 404, 429)
        error = await stream.frame()
        assert error["code"] == 4008
        assert (await stream.frame())["code"] == 4008


async def test_post_to_a_stream_whose_replica_is_gone_is_404() -> None:
    """Distributed: the handle names replica A; once A is gone, B finds no listener."""
    async with environment() as env, run_hub("distributed", env=env) as b:
        async with run_hub("distributed", env=env) as a, open_stream(a.http, a.token("42")) as stream:
            await stream.frame()
            hello = stream.hello
        gone = await b.http.post(hello["post"], content="{}", headers={"Authorization": f"Bearer {hello['secret']}"})
        assert gone.status_code == 404
        assert "ended" in gone.json()["error"]


async def test_a_stream_that_stops_reading_is_dropped_within_the_send_timeout() -> None:
    """The SSE writer has the WebSocket's deadline: a client that stops reading loses its
    session (presence, connection slot) after HUB_SEND_TIMEOUT."""
    async with run_hub("memory", send_timeout=1.0) as hub:
        value = await ticket(hub.http, hub.token("42"))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", hub.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET /sse?ticket={value} HTTP/1.1\r\nHost: hub\r\n\r\n".encode())
        assert b" 200 " in await reader.readline()

        async def online() -> bool:
            return (await hub.api("GET", "/api/presence/42")).json()["connections"] == 1

        await wait_for(online, what="the stream to be open")
        writer.transport.pause_reading()  # from now on this client reads nothing
        big = "x" * 60_000
        for _ in range(100):
            await hub.publish("42", {"big": big})

        async def dropped() -> bool:
            return (await hub.api("GET", "/api/presence/42")).json()["connections"] == 0

        await wait_for(dropped, what="the stuck stream to be dropped")
        assert not hub.node.sessions
        writer.close()


async def test_last_event_id_query_for_eventsource(history_hub: RunningHub) -> None:
    """An ``EventSource`` cannot set headers on a new stream: ``?last_event_id=`` does the same."""
    hub = history_hub
    async with open_stream(hub.http, hub.token("42")) as stream:
        await stream.frame()
        await hub.publish("42", {"n": 3})
        [frame] = await stream.notifications(1)
    since = f"user.42:{frame['offset']}"
    await hub.publish("42", {"n": 4})
    value = await ticket(hub.http, hub.token("42"))
    async with hub.http.stream("GET", "/sse", params={"ticket": value, "last_event_id": since}) as response:
        assert response.status_code == 200
        resumed = Stream(response, str(hub.http.base_url))
        assert (await resumed.next()).event == "hub.stream"
        assert (await resumed.frame())["recovered"] is True
        [replayed] = await resumed.notifications(1)
        assert replayed["data"] == {"n": 4}


def test_event_ids_and_handles_round_trip() -> None:
    """The pure parts: ``id:`` ↔ ``Last-Event-ID`` and stream handles (no I/O)."""
    offsets = {"user.42": "5-1", "broadcast": "7-0"}
    assert event_id(offsets) == "broadcast:7-0,user.42:5-1"
    assert parse_event_id(event_id(offsets)) == offsets
    for bad in ("user.42", "user.42:", ":5-0", "a:1-0,a:2-0", ",".join(f"t{i}:1-0" for i in range(33))):
        with pytest.raises(ValueError, match=r"expected|more than"):
            parse_event_id(bad)
    handle = make_handle("abc123", "host:8080")
    assert split_handle(handle) == ("abc123", "host:8080")
    for bad in ("", "abc", "abc.", ".eA", "abc.%%%", "x." + "A" * 500):
        assert split_handle(bad) is None


async def test_read_frames_go_by_post_and_reach_the_users_other_streams(history_hub: RunningHub) -> None:
    """The POST seam is generic: ``read`` (§9) over SSE, answered on every stream of the user."""
    hub = history_hub
    async with open_stream(hub.http, hub.token("42")) as phone, open_stream(hub.http, hub.token("42")) as laptop:
        await phone.frame()
        await laptop.frame()
        for n in range(2):
            await hub.publish("42", {"n": n})
        first, _ = await laptop.notifications(2)
        await phone.notifications(2)
        answer = await laptop.post(hub.http, {"type": "read", "topic": "user.42", "up_to": first["offset"]})
        assert answer.status_code == 202
        for stream in (laptop, phone):
            frame = await stream.frame()
            assert frame["type"] == "read", frame
            assert frame["up_to"] == first["offset"]
            assert frame["unread"] == 1
