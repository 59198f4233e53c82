"""Poison on the ingest path: one bad AMQP message each, against a real distributed hub.

Each test publishes one message the hub cannot take (raw frames where aio-pika would
refuse to encode it) between valid notifications of another user, and asserts: the
message is in ``hub.dead`` with its ``x-hub-reason``; the other user's socket got every
valid notification, in order; the victim's socket gets what is published after the
poison; ``/readyz`` answered 200 throughout; the hub's AMQP connection never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
import msgpack
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage

from hub.amqp_decode import MAX_DEPTH as MAX_HEADER_DEPTH
from hub.payload import MAX_DEPTH
from tests import raw_amqp as raw
from tests.distributed_env import REDIS_URL, environment
from tests.harness import RunningHub, run_hub, wait_for

pytestmark = [pytest.mark.distributed, pytest.mark.asyncio(loop_scope="module")]

DELIVERY_LIMIT = 3
_markers = itertools.count()


@dataclass
class Deployment:
    """One distributed hub shared by this module's tests, and publishers next to it."""

    hub: RunningHub
    env: dict[str, str]
    exchange: aio_pika.abc.AbstractExchange
    raw: aiormq.abc.AbstractChannel
    dead: aio_pika.abc.AbstractQueue
    letters: list[AbstractIncomingMessage] = field(default_factory=list)

    async def publish(self, user: str, data: Any) -> None:
        """A valid notification, confirmed by RabbitMQ."""
        body = json.dumps(data).encode()
        message = aio_pika.Message(body, content_type="application/json", delivery_mode=2)
        await self.exchange.publish(message, routing_key=f"user.{user}")

    async def dead_letter(self, marker: str) -> AbstractIncomingMessage:
        """The dead letter of the message marked ``marker`` (its app_id or correlation_id)."""

        async def find() -> AbstractIncomingMessage | None:
            while (letter := await self.dead.get(fail=False, no_ack=True)) is not None:
                self.letters.append(letter)
            return next((m for m in self.letters if marker in (m.app_id, m.correlation_id)), None)

        letter: AbstractIncomingMessage = await wait_for(find, timeout=20, what=f"the dead letter of {marker}")
        return letter


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment() -> AsyncIterator[Deployment]:
    async with (
        environment() as env,
        run_hub("distributed", env=env, delivery_limit=DELIVERY_LIMIT) as hub,
        await aio_pika.connect(env["HUB_AMQP_URL"]) as connection,
    ):
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(env["HUB_EXCHANGE"])
        # A queue of our own on the dead-letter fanout: every dead letter, from now on.
        dead = await channel.declare_queue(exclusive=True)
        await dead.bind(env["HUB_DEAD_LETTER"])
        raw_connection = await aiormq.connect(env["HUB_AMQP_URL"])
        try:
            raw_channel = await raw_connection.channel(publisher_confirms=False)
            yield Deployment(hub, env, exchange, raw_channel, dead)
        finally:
            await raw_connection.close()


@contextlib.asynccontextmanager
async def ready_throughout(hub: RunningHub) -> AsyncIterator[None]:
    """Poll ``/readyz`` while the block runs; fail unless every answer was 200."""
    statuses: list[int] = []
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            statuses.append((await hub.http.get("/readyz")).status_code)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    task = asyncio.create_task(poll())
    try:
        yield
    finally:
        stop.set()
        await task
    assert statuses, "expected /readyz to be polled"
    assert set(statuses) == {200}, f"/readyz answered {sorted(set(statuses))} meanwhile"


async def survives(
    d: Deployment,
    *,
    kind: str,
    reason: str,
    body: bytes = b'{"poison": true}',
    routing_key: bytes | None = None,
    **props: bytes | int,
) -> AbstractIncomingMessage:
    """Publish one poison between valid notifications of another user; assert the outcome
    the module docstring names. Returns the dead letter."""
    victim, other = f"v{uuid.uuid4().hex[:8]}", f"o{uuid.uuid4().hex[:8]}"
    marker = f"poison-{next(_markers)}"
    props.setdefault("app_id" if "app_id" not in props else "correlation_id", marker.encode())
    key = routing_key if routing_key is not None else f"user.{victim}".encode()
    connection = d.hub.node.backend.connection
    assert connection is not None
    transport = connection.transport
    victim_socket, other_socket = await d.hub.connect(victim), await d.hub.connect(other)
    async with ready_throughout(d.hub):
        await d.publish(other, {"n": 0})
        await raw.publish_raw(d.raw, d.env["HUB_EXCHANGE"], key, body, raw.properties(**props))
        for n in range(1, 4):
            await d.publish(other, {"n": n})
        got = await other_socket.notifications(4, timeout=20)
        assert [frame["data"] for frame in got] == [{"n": n} for n in range(4)]

        letter = await d.dead_letter(marker)
        assert letter.body == body
        assert str(letter.headers["x-hub-reason"]).startswith(f"{kind}: "), letter.headers
        assert reason in str(letter.headers["x-hub-reason"]), letter.headers
        printable_key = key.decode("utf-8", "backslashreplace")
        assert letter.headers["x-hub-routing-key"] == printable_key

        await d.publish(victim, {"after": True})
        (frame,) = await victim_socket.notifications(1, timeout=20)
        assert frame["data"] == {"after": True}  # the poison never reached the socket
    assert connection.transport is transport, "the hub's AMQP connection dropped"
    await victim_socket.close()
    await other_socket.close()
    return letter


# ------------------------------------------------------------------ properties pamqp cannot decode


async def test_message_id_not_utf8(deployment: Deployment) -> None:
    letter = await survives(
        deployment, kind="bad-properties", reason="message_id: not UTF-8 (b'\\xff\\xfe')", message_id=b"\xff\xfe"
    )
    assert letter.message_id == "\\xff\\xfe"  # shown, readable by any client


@pytest.mark.parametrize(
    "name", ["content_type", "content_encoding", "correlation_id", "reply_to", "message_type", "app_id"]
)
async def test_short_string_property_not_utf8(deployment: Deployment, name: str) -> None:
    # user_id and expiration are checked by RabbitMQ itself: it refuses such a publish.
    await survives(deployment, kind="bad-properties", reason=f"{name}: not UTF-8", **{name: b"x\xc3\x28"})


async def test_timestamp_out_of_range(deployment: Deployment) -> None:
    await survives(deployment, kind="bad-properties", reason="timestamp out of range", timestamp=2**63)


async def test_header_key_not_utf8(deployment: Deployment) -> None:
    table = raw.table({b"ok": b"t\x01", b"\xfe\xff": b"S" + raw.long_str(b"v")})
    letter = await survives(deployment, kind="bad-properties", reason="headers: not UTF-8", headers=table)
    assert letter.headers["\\xfe\\xff"] == "v"
    assert letter.headers["ok"] is True


async def test_header_table_nested_5000_deep(deployment: Deployment) -> None:
    reason = f"nested deeper than {MAX_HEADER_DEPTH}"
    await survives(deployment, kind="bad-properties", reason=reason, headers=raw.nested_table(5000))


async def test_message_id_with_control_characters(deployment: Deployment) -> None:
    await survives(deployment, kind="bad-properties", reason="without control characters", message_id=b"a\nb")


# ------------------------------------------------------------------ bodies


async def test_json_nested_3000_deep(deployment: Deployment) -> None:
    body = b"[" * 3000 + b"]" * 3000
    reason = f"nested at most {MAX_DEPTH}"
    await survives(deployment, kind="unreadable", reason=reason, body=body, content_type=b"application/json")
    await survives(deployment, kind="unreadable", reason=reason, body=body)  # no content type: JSON all the same


async def test_msgpack_nested_1000_deep(deployment: Deployment) -> None:
    body = b"\x91" * 1000 + b"\xc0"
    reason = f"nested at most {MAX_DEPTH}"
    await survives(deployment, kind="unreadable", reason=reason, body=body, content_type=b"application/msgpack")


async def test_lone_surrogate_in_json(deployment: Deployment) -> None:
    body = b'{"text": "cut emoji \\ud83d"}'
    reason = "lone surrogates"
    await survives(deployment, kind="unreadable", reason=reason, body=body, content_type=b"application/json")
    await survives(deployment, kind="unreadable", reason=reason, body=body)


async def test_lone_surrogate_in_msgpack(deployment: Deployment) -> None:
    body = b"\x81\xa4text\xa3\xed\xa0\x80"  # {"text": "\ud800"}, the surrogate as UTF-8 bytes (CESU-8)
    assert msgpack.unpackb(body, unicode_errors="surrogatepass") == {"text": "\ud800"}
    await survives(
        deployment, kind="unreadable", reason="unreadable msgpack", body=body, content_type=b"application/x-msgpack"
    )


async def test_malformed_json_sent_as_json(deployment: Deployment) -> None:
    await survives(
        deployment, kind="unreadable", reason="unreadable JSON", body=b'{"n": ', content_type=b"application/json"
    )


@pytest.mark.parametrize("body", [b'{"n": NaN}', b"[Infinity]", b"-Infinity", b"1e999"])
async def test_nan_and_infinity(deployment: Deployment, body: bytes) -> None:
    await survives(deployment, kind="unreadable", reason="finite numbers", body=body)


async def test_body_larger_than_a_mebibyte(deployment: Deployment) -> None:
    body = b"[" * (1_048_576 + 1)  # and the nesting check never runs on it
    await survives(deployment, kind="too-large", reason="at most 1048576 bytes", body=body)


# ------------------------------------------------------------------ routing keys


@pytest.mark.parametrize(
    "key", [b"user.a*b", b"user.\xff", b"user..x", b"", b"a.b.c.d.e.f.g.h.i", b"user." + b"x" * 129]
)
async def test_invalid_routing_key(deployment: Deployment, key: bytes) -> None:
    await survives(deployment, kind="invalid-topic", reason="routing key: expected a topic", routing_key=key)


# ------------------------------------------------------------------ a message that fails its batch every time


async def test_delivery_limit(deployment: Deployment) -> None:
    """A message Redis refuses to store (its stream key holds a string) fails its batch every
    time: it is tried DELIVERY_LIMIT times, then dead-lettered; the rest flows meanwhile."""
    d = deployment
    victim, other = f"v{uuid.uuid4().hex[:8]}", f"o{uuid.uuid4().hex[:8]}"
    stream = f"{d.env['HUB_REDIS_PREFIX']}s:{{user.{victim}}}"
    redis = aioredis.Redis.from_url(REDIS_URL)
    victim_socket, other_socket = await d.hub.connect(victim), await d.hub.connect(other)
    try:
        await redis.set(stream, "not a stream")
        async with ready_throughout(d.hub):
            await d.publish(other, {"n": 0})
            poison = aio_pika.Message(b'{"ok": "but not storable"}', content_type="application/json", app_id="limit")
            await d.exchange.publish(poison, routing_key=f"user.{victim}")
            for n in range(1, 6):
                await d.publish(other, {"n": n})
            got = await other_socket.notifications(6, timeout=30)
            assert [frame["data"] for frame in got] == [{"n": n} for n in range(6)]

            letter = await d.dead_letter("limit")
            reason = str(letter.headers["x-hub-reason"])
            assert reason == f"delivery-limit: tried {DELIVERY_LIMIT} times (delivery_limit {DELIVERY_LIMIT})"

            await redis.delete(stream)
            await d.publish(victim, {"after": True})
            (frame,) = await victim_socket.notifications(1, timeout=20)
            assert frame["data"] == {"after": True}
        metrics = (await d.hub.http.get("/metrics")).text
        assert 'hub_dead_letters_total{reason="delivery-limit"} 1.0' in metrics
    finally:
        await redis.delete(stream)
        await redis.aclose()
        await victim_socket.close()
        await other_socket.close()


async def test_dead_letters_are_counted_by_reason(deployment: Deployment) -> None:
    metrics = (await deployment.hub.http.get("/metrics")).text
    for kind in ("bad-properties", "unreadable", "invalid-topic"):
        assert f'hub_dead_letters_total{{reason="{kind}"}}' in metrics, kind


# ------------------------------------------------------------------ poison already stored


async def test_unreadable_history_entries_are_skipped_and_counted(deployment: Deployment) -> None:
    """Entries a socket could not be sent (written by something else, or by an older, less
    strict hub) are skipped on recovery and counted: no 1011, the rest is delivered."""
    d = deployment
    user = f"h{uuid.uuid4().hex[:8]}"
    stream = f"{d.env['HUB_REDIS_PREFIX']}s:{{user.{user}}}"
    history = d.hub.node.backend.history
    assert history is not None
    skipped = history.skipped
    bad: list[dict[str, bytes]] = [
        {"i": b"nan", "t": b"1", "k": b"j", "d": b'{"n": NaN}'},
        {"i": b"surrogate", "t": b"1", "k": b"j", "d": b'"\\ud800"'},
        {"i": b"deep", "t": b"1", "k": b"j", "d": b"[" * 3000 + b"]" * 3000},
        {"i": b"msgpack", "t": b"1", "k": b"m", "d": b"\xc1"},
        {"i": b"bin", "t": b"1", "k": b"m", "d": msgpack.packb(b"raw")},
        {"i": b"\xff", "t": b"1", "k": b"j", "d": b"1"},
        {"i": b"ts", "t": b"soon", "k": b"j", "d": b"1"},
        {"i": b"no data", "t": b"1", "k": b"j"},
    ]
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        await redis.xadd(stream, {"i": "good-1", "t": "1", "k": "j", "d": '{"n": 1}'})
        for entry in bad:
            await redis.xadd(stream, entry)  # type: ignore[arg-type]
        await redis.xadd(stream, {"i": "good-2", "t": "2", "k": "m", "d": msgpack.packb({"n": 2})})
        for _ in range(2):  # every reconnect replays the range: each time it must hold
            client = await d.hub.connect(user, since={f"user.{user}": "0-0"})
            got = await client.notifications(2)
            assert [(n["id"], n["data"]) for n in got] == [("good-1", {"n": 1}), ("good-2", {"n": 2})]
            await client.expect_silence(0.3)
            await client.close()
        assert history.skipped == skipped + 2 * len(bad)
        metrics = (await d.hub.http.get("/metrics")).text
        assert f"hub_history_skipped_total {float(history.skipped)}" in metrics
    finally:
        await redis.delete(stream)
        await redis.aclose()
