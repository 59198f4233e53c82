"""Every close code of protocol v1 (docs/protocol.md §3) with its reason, on every backend."""

from __future__ import annotations

import asyncio
import json

import msgpack
import pytest
from websockets.exceptions import InvalidStatus

from hub.codes import CloseCode
from tests.harness import Client, RunningHub, make_token, run_hub, wait_for


async def expect_close(client: Client, code: CloseCode) -> str:
    closed = await client.closed()
    assert closed.code == code, f"expected close {int(code)}, got {closed}"
    assert closed.error is not None, "expected an error frame before the close"
    assert closed.error["code"] == int(code)
    message: str = closed.error["message"]
    assert message
    return message


async def raw_client(hub: RunningHub, binary: bool = False) -> Client:
    return Client(await hub.open("hub.v1.msgpack" if binary else "hub.v1.json"), binary=binary)


async def test_no_connect_frame_in_time(strict_hub: RunningHub) -> None:
    client = await raw_client(strict_hub)
    assert "within" in await expect_close(client, CloseCode.BAD_TOKEN)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        make_token("42", secret="another-secret-that-is-also-long-enough"),
        make_token("a.b"),
        make_token("*"),
        make_token("#"),
        make_token(""),
    ],
    ids=["garbage", "wrong-secret", "dot-in-sub", "star-sub", "hash-sub", "empty-sub"],
)
async def test_bad_token(hub: RunningHub, token: str) -> None:
    client = await hub.connect(token=token, expect_connected=False)
    await expect_close(client, CloseCode.BAD_TOKEN)


async def test_token_without_exp(hub: RunningHub) -> None:
    import jwt

    from tests.harness import SECRET

    client = await hub.connect(token=jwt.encode({"sub": "42"}, SECRET, algorithm="HS256"), expect_connected=False)
    assert "exp" in await expect_close(client, CloseCode.BAD_TOKEN)


async def test_first_frame_must_be_connect(hub: RunningHub) -> None:
    client = await raw_client(hub)
    await client.send({"type": "pong"})
    await expect_close(client, CloseCode.BAD_TOKEN)


async def test_expired_token(hub: RunningHub) -> None:
    client = await hub.connect(token=make_token("42", ttl=-10), expect_connected=False)
    await expect_close(client, CloseCode.TOKEN_EXPIRED)


async def test_token_expires_while_connected_without_refresh(hub: RunningHub) -> None:
    client = await hub.connect(token=make_token("42", ttl=1.5))
    assert "refresh" in await expect_close(client, CloseCode.TOKEN_EXPIRED)


async def test_refresh_keeps_the_socket_open_past_the_old_expiry(hub: RunningHub) -> None:
    client = await hub.connect(token=make_token("42", ttl=1.5))
    await client.send({"type": "refresh", "token": make_token("42", ttl=60)})
    await asyncio.sleep(2.1)  # past the first token's exp: the point of the test is that time passes
    await hub.publish("42", "still here")
    [frame] = await client.notifications(1)
    assert frame["data"] == "still here"
    await client.close()


async def test_refresh_for_another_user_is_refused(hub: RunningHub) -> None:
    client = await hub.connect("42")
    await client.send({"type": "refresh", "token": make_token("43")})
    await expect_close(client, CloseCode.BAD_TOKEN)


async def test_refresh_with_expired_token(hub: RunningHub) -> None:
    client = await hub.connect("42")
    await client.send({"type": "refresh", "token": make_token("42", ttl=-5)})
    await expect_close(client, CloseCode.TOKEN_EXPIRED)


@pytest.mark.parametrize("frame", ["not json", "[1,2]", '{"type":"subscribe"}', '{"type":"connect","token":"x"}'])
async def test_malformed_frame_after_connect(hub: RunningHub, frame: str) -> None:
    client = await hub.connect("42")
    await client.ws.send(frame)
    await expect_close(client, CloseCode.PROTOCOL_ERROR)


async def test_malformed_msgpack(hub: RunningHub) -> None:
    client = await hub.connect("42", msgpack_protocol=True)
    await client.ws.send(b"\xc1")
    await expect_close(client, CloseCode.PROTOCOL_ERROR)


async def test_text_frame_on_msgpack(hub: RunningHub) -> None:
    client = await raw_client(hub, binary=True)
    await client.ws.send(json.dumps({"type": "connect", "token": make_token("1")}))
    await expect_close(client, CloseCode.PROTOCOL_ERROR)


async def test_binary_frame_on_json(hub: RunningHub) -> None:
    client = await raw_client(hub)
    await client.ws.send(msgpack.packb({"type": "connect", "token": make_token("1")}))
    await expect_close(client, CloseCode.PROTOCOL_ERROR)


async def test_since_for_a_topic_not_granted(hub: RunningHub) -> None:
    client = await hub.connect("42", since={"user.43": "1-0"}, expect_connected=False)
    assert "user.43" in await expect_close(client, CloseCode.FORBIDDEN)


@pytest.mark.parametrize("topics", [["team.*"], ["#"], ["a..b"], ["ok", 7], "broadcast"])
async def test_granted_topic_that_is_not_allowed(hub: RunningHub, topics: object) -> None:
    client = await hub.connect(token=make_token("42", topics=topics), expect_connected=False)  # type: ignore[arg-type]
    await expect_close(client, CloseCode.FORBIDDEN)


async def test_frame_rate_limit(strict_hub: RunningHub) -> None:
    client = await strict_hub.connect("42")
    for _ in range(40):
        await client.send({"type": "pong"})
    assert "per second" in await expect_close(client, CloseCode.LIMIT)


async def test_connections_per_user_limit(strict_hub: RunningHub) -> None:
    first = await strict_hub.connect("42")
    second = await strict_hub.connect("42")
    third = await strict_hub.connect("42", expect_connected=False)
    assert "limit" in await expect_close(third, CloseCode.LIMIT)
    other_user = await strict_hub.connect("43")  # the limit is per user
    await second.close()

    async def fits_again() -> bool:
        client = await strict_hub.connect("42", expect_connected=False)
        frame = await client.recv()
        await client.close()
        return bool(frame["type"] == "connected")

    await wait_for(fits_again, what="a slot after a close")
    await first.close()
    await other_user.close()


async def test_frame_too_big(strict_hub: RunningHub) -> None:
    client = await strict_hub.connect("42")
    await client.send({"type": "pong", "padding": "x" * 4096})
    closed = await client.closed()
    assert closed.code == CloseCode.FRAME_TOO_BIG


async def test_the_hub_keeps_serving_after_bad_clients(hub: RunningHub) -> None:
    good = await hub.connect("42")
    bad = await hub.connect("42")
    await bad.ws.send("\x00garbage")
    await expect_close(bad, CloseCode.PROTOCOL_ERROR)
    await hub.publish("42", "fine")
    [frame] = await good.notifications(1)
    assert frame["data"] == "fine"
    await good.close()


async def test_ping_pong_and_silence_watchdog(backend_name: str) -> None:
    async with run_hub(backend_name, ping_interval=0.2) as hub:
        lively = await hub.connect("42")
        silent = await hub.connect("43")
        silent.answer_pings = False
        listening = asyncio.create_task(lively.notifications(1))  # reads, so it answers pings
        closed = await silent.closed()
        assert closed.code == CloseCode.GOING_AWAY
        assert silent.pings >= 1
        await hub.publish("42", "alive")  # the answering client outlived the silent one
        [frame] = await listening
        assert frame["data"] == "alive"
        assert lively.pings >= 2
        await lively.close()


async def test_origin_allow_list(backend_name: str) -> None:
    async with run_hub(backend_name, allowed_origins=("https://app.example",)) as hub:
        with pytest.raises(InvalidStatus) as refused:
            await hub.open("hub.v1.json", origin="https://evil.example")
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            await hub.open("hub.v1.json")  # no Origin at all
        ws = await hub.open("hub.v1.json", origin="https://app.example")
        client = Client(ws, binary=False)
        await client.send({"type": "connect", "token": make_token("42")})
        assert (await client.recv())["type"] == "connected"
        await client.close()


async def test_unknown_subprotocol_is_refused(hub: RunningHub) -> None:
    with pytest.raises(InvalidStatus):
        await hub.open("mqtt")


async def test_wrong_path_is_refused(hub: RunningHub) -> None:
    from websockets.asyncio.client import connect

    with pytest.raises(InvalidStatus):
        await connect(f"ws://127.0.0.1:{hub.port}/other")
