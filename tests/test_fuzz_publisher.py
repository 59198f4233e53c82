"""A fuzzing publisher against a real distributed hub (docs/protocol.md §4, §5).

A seeded generator makes ``MESSAGES`` AMQP messages, about 60 % valid notifications
(JSON, msgpack and text bodies under every accepted content type, random valid headers
and properties) and 40 % messages the hub cannot take (properties that are not UTF-8,
deep or huge header tables, bad timestamps, invalid routing keys, unreadable, deep, NaN
or lone-surrogate bodies), all addressed to the users whose sockets are receiving. They
go out byte by byte on one channel, in order. Then: every valid notification was
delivered exactly once and in order to its user (offset order: publish order among equal
AMQP priorities, which the priority queue may reorder); every invalid one is in ``hub.dead``
with the reason kind it deserves; ``/readyz`` answered 200 throughout; the hub's AMQP
connection never dropped. ``HUB_FUZZ_SEED`` replays a run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aio_pika
import aiormq
import msgpack
import pytest
from pamqp import encode

from tests import raw_amqp as raw
from tests.distributed_env import environment
from tests.harness import Client, run_hub, wait_for
from tests.test_ingest_poison import ready_throughout

pytestmark = pytest.mark.distributed

SEED = int(os.environ.get("HUB_FUZZ_SEED", "9091"))
MESSAGES = 2500
USERS = 16
SHORT_STRINGS = ["content_type", "content_encoding", "correlation_id", "reply_to", "message_id", "message_type"]
CONTROL = [b"\n", b"\x00", b"\x7f", "\u2029".encode()]
TEXT = string.ascii_letters + string.digits + " \"\\/'<>{}[]:,.-_" + "éüß€漢字😀\u2028\u00a0"


@dataclass
class Case:
    """One generated message and what the hub must do with it."""

    index: int
    routing_key: bytes
    body: bytes
    props: dict[str, bytes | int]
    user: str | None = None  # valid: the user it goes to, with ``data``
    data: Any = None
    kind: str | None = None  # invalid: the dead-letter reason kind

    @property
    def marker(self) -> str:
        return f"fz-{self.index}"


@dataclass
class Generator:
    rng: random.Random
    users: list[str]
    sequence: Counter[str] = field(default_factory=Counter)

    def text(self, low: int = 0, high: int = 20) -> str:
        return "".join(self.rng.choice(TEXT) for _ in range(self.rng.randint(low, high)))

    def short(self, low: int = 1) -> bytes:
        return self.text(low, 30).encode()[:255]

    def not_utf8(self) -> bytes:
        good = self.text(0, 10).encode()[:200]
        cut = self.rng.randint(0, len(good))
        return good[:cut] + self.rng.choice([b"\xff", b"\xfe\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]) + good[cut:]

    def value(self, depth: int = 0) -> Any:
        kinds = ["int", "str", "bool", "float", "decimal", "bytes", "none"] + (["table", "list"] if depth < 3 else [])
        kind = self.rng.choice(kinds)
        if kind == "int":
            return self.rng.randint(-(2**63), 2**63 - 1)
        if kind == "str":
            return self.text()
        if kind == "bool":
            return self.rng.random() < 0.5
        if kind == "float":
            return self.rng.choice([0.5, -1.25, 3.0])  # pamqp sends single precision
        if kind == "decimal":
            return Decimal(self.rng.randint(0, 10**6)).scaleb(-2)
        if kind == "bytes":
            return bytearray(self.rng.randbytes(self.rng.randint(0, 8)))
        if kind == "none":
            return None
        if kind == "table":
            return {self.text(1, 8): self.value(depth + 1) for _ in range(self.rng.randint(0, 3))}
        return [self.value(depth + 1) for _ in range(self.rng.randint(0, 3))]

    def valid_props(self) -> dict[str, bytes | int]:
        props: dict[str, bytes | int] = {}
        rng = self.rng
        if rng.random() < 0.5:
            headers: dict[str, Any] = {self.text(1, 10): self.value() for _ in range(rng.randint(0, 5))}
            if rng.random() < 0.5:
                headers["ts"] = rng.choice([1_700_000_000_000, -1, True, "x", 2**62])
            props["headers"] = encode.field_table(headers)
        for name in ("content_encoding", "correlation_id", "reply_to", "message_type"):
            if rng.random() < 0.2:
                props[name] = self.short()
        if rng.random() < 0.3:
            props["priority"] = rng.randint(0, 9)
        if rng.random() < 0.3:
            props["timestamp"] = rng.randint(0, 2**32)
        props["delivery_mode"] = rng.choice([1, 2])
        return props

    def valid(self, index: int) -> Case:
        rng = self.rng
        user = rng.choice(self.users)
        self.sequence[user] += 1
        seq = self.sequence[user]
        props = self.valid_props()
        if rng.random() < 0.5:
            props["message_id"] = f"fz-{SEED}-{index}-{rng.getrandbits(64):x}".encode()
        payload: Any = {"u": user, "seq": seq, "t": self.text(), "n": rng.randint(-(2**53), 2**53)}
        if rng.random() < 0.2:
            nest: Any = seq
            for _ in range(rng.randint(1, 30)):
                nest = [nest]
            payload["deep"] = nest
        encoding = rng.choice(["json", "json-charset", "vnd+json", "none", "msgpack", "x-msgpack", "text", "other"])
        data: Any = payload
        if encoding in ("json", "json-charset", "vnd+json", "none"):
            body = json.dumps(payload, ensure_ascii=rng.random() < 0.5).encode()
            props.update(
                {
                    "json": {"content_type": b"application/json"},
                    "json-charset": {"content_type": b"application/json; charset=utf-8"},
                    "vnd+json": {"content_type": b"application/vnd.hub+json"},
                    "none": {},
                }[encoding]
            )
        elif encoding in ("msgpack", "x-msgpack"):
            body = msgpack.packb(payload)
            props["content_type"] = f"application/{encoding}".encode()
        else:
            data = f"{user}:{seq}:{self.text()}"
            body = data.encode()
            props["content_type"] = b"text/plain" if encoding == "text" else b"application/octet-stream"
        return Case(index, f"user.{user}".encode(), body, props, user=user, data=data)

    def invalid(self, index: int) -> Case:
        rng = self.rng
        user = rng.choice(self.users)  # aimed at a socket: were it relayed, the socket would see it
        props = self.valid_props()
        body = json.dumps({"u": user, "poison": index}).encode()
        case = Case(index, f"user.{user}".encode(), body, props)
        kind = rng.choice(["bad-properties", "invalid-topic", "unreadable"])
        case.kind = kind
        if kind == "bad-properties":
            how = rng.choice(["short", "short", "header-key", "deep", "wide", "timestamp", "id"])
            if how == "short":
                props[rng.choice(SHORT_STRINGS)] = self.not_utf8()
            elif how == "header-key":
                props["headers"] = raw.table({self.not_utf8(): b"t\x01", b"ok": b"V"})
            elif how == "deep":
                props["headers"] = raw.nested_table(rng.randint(17, 3000))
            elif how == "wide":
                props["headers"] = raw.table({b"%d" % i: b"V" for i in range(rng.randint(1025, 5000))})
            elif how == "timestamp":
                props["timestamp"] = rng.randint(2**60, 2**64 - 1)  # pamqp reads it as ms: past year 9999
            else:
                props["message_id"] = b"id" + rng.choice(CONTROL) + str(index).encode()
        elif kind == "invalid-topic":
            case.routing_key = rng.choice(
                [
                    f"user.{user}*".encode(),
                    b"user.#",
                    b"",
                    b"user..x",
                    f"user.{user}.".encode(),
                    ".".join(["a"] * rng.randint(9, 20)).encode(),
                    b"user." + b"x" * 129,
                    f"user.{user}é".encode(),
                    f"user.{user}".encode() + self.not_utf8(),
                    b"user. x",
                ]
            )
        else:
            case.body, content_type = self.unreadable(user)
            props.pop("content_type", None)
            if content_type is not None:
                props["content_type"] = content_type
        return case

    def unreadable(self, user: str) -> tuple[bytes, bytes | None]:
        rng = self.rng
        depth = rng.randint(33, 3000)
        return rng.choice(
            [
                (json.dumps({"u": user}).encode()[: rng.randint(1, 8)], b"application/json"),  # cut short
                (self.text(1, 10).encode() + b"{", b"application/json"),
                (b"", b"application/json"),
                (b'{"u": NaN}', rng.choice([None, b"application/json"])),
                (b"[Infinity, -Infinity]", None),
                (b'{"t": "\\ud83d"}', rng.choice([None, b"application/json"])),  # a cut emoji
                (b"[" * depth + b"]" * depth, rng.choice([None, b"application/json"])),
                (b"\x91" * depth + b"\xc0", b"application/msgpack"),
                (b"\xc1" + rng.randbytes(4), b"application/x-msgpack"),
                (msgpack.packb({"u": user})[:-1], b"application/msgpack"),  # truncated
                (msgpack.packb(b"bin"), b"application/msgpack"),
                (msgpack.packb(float("nan")), b"application/msgpack"),
                (b"\x81\xa1t\xa3\xed\xa0\x80", b"application/msgpack"),  # a surrogate, CESU-8
                (self.not_utf8(), rng.choice([None, b"text/plain", b"application/json"])),
                (b"18446744073709551616", None),
            ]
        )


def generate() -> list[Case]:
    rng = random.Random(SEED)
    generator = Generator(rng, [f"f{i}" for i in range(USERS)])
    cases = []
    for index in range(MESSAGES):
        case = generator.valid(index) if rng.random() < 0.6 else generator.invalid(index)
        case.props["app_id"] = case.marker.encode()  # never a corrupted one: it finds the dead letter
        cases.append(case)
    return cases


async def receive(client: Client, count: int) -> list[dict[str, Any]]:
    got = await client.notifications(count, timeout=120)
    await client.expect_silence(0.5)  # and nothing more: no duplicate, nothing relayed that should not be
    return got


@pytest.mark.timeout(300)
async def test_fuzzing_publisher() -> None:
    cases = generate()
    valid = [case for case in cases if case.kind is None]
    invalid = {case.marker: case for case in cases if case.kind is not None}
    users = sorted({f"f{i}" for i in range(USERS)})
    async with environment() as env, run_hub("distributed", env=env) as hub:
        connection = hub.node.backend.connection
        assert connection is not None
        transport = connection.transport
        clients = {user: await hub.connect(user, msgpack_protocol=i % 2 == 1) for i, user in enumerate(users)}
        expected = {user: [case.data for case in valid if case.user == user] for user in users}
        receivers = {user: asyncio.create_task(receive(clients[user], len(expected[user]))) for user in users}
        publisher = await aiormq.connect(env["HUB_AMQP_URL"])
        async with ready_throughout(hub):
            try:
                channel = await publisher.channel(publisher_confirms=False)
                for case in cases:
                    props = raw.properties(**case.props)
                    await raw.publish_raw(channel, env["HUB_EXCHANGE"], case.routing_key, case.body, props)
                await channel.basic_qos(prefetch_count=0)  # a round trip: the broker took every publish
            finally:
                await publisher.close()
            received = {user: await task for user, task in receivers.items()}
            dead = await dead_letters(env, set(invalid))
        assert connection.transport is transport, "the hub's AMQP connection dropped"

    for user in users:
        frames = received[user]
        # in order (docs/protocol.md §5): offset order; hub.ingest is a priority queue, so a
        # higher AMQP priority may overtake what waits with it, and equal priorities keep
        # their publish order
        got = [frame["data"] for frame in frames]
        assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, expected[user])), user  # each exactly once
        priority = {json.dumps(case.data): min(case.props.get("priority") or 0, 9) for case in valid}
        for level in range(10):
            same = [d for d in got if priority[json.dumps(d)] == level]
            assert same == [d for d in expected[user] if priority[json.dumps(d)] == level], (user, level)
        offsets = [tuple(map(int, frame["offset"].split("-"))) for frame in frames]
        assert offsets == sorted(offsets), user
        assert len(set(offsets)) == len(offsets), user
    kinds: Counter[str] = Counter()
    for marker, reason in dead.items():
        kind = reason.split(":", 1)[0]
        assert kind == invalid[marker].kind, (marker, reason, invalid[marker])
        kinds[kind] += 1
    print(
        f"\nfuzz seed {SEED}: {len(cases)} messages, {len(valid)} valid delivered exactly once in order "
        f"to {USERS} sockets, {len(dead)} dead-lettered ({dict(sorted(kinds.items()))})"
    )


async def dead_letters(env: dict[str, str], markers: set[str]) -> dict[str, str]:
    """Marker → x-hub-reason of every dead letter, once all of ``markers`` are in."""
    found: dict[str, str] = {}
    connection = await aio_pika.connect(env["HUB_AMQP_URL"])
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(env["HUB_DEAD_LETTER"], passive=True)

        async def drain() -> bool:
            while (letter := await queue.get(fail=False, no_ack=True)) is not None:
                marker = letter.app_id
                assert marker in markers, f"a dead letter nobody sent: {letter.headers}"
                assert marker not in found, f"dead-lettered twice: {marker}"
                assert "x-hub-reason" in letter.headers, (marker, letter.headers, letter.body[:100])
                found[str(marker)] = str(letter.headers["x-hub-reason"])
            return len(found) == len(markers)

        await wait_for(drain, timeout=120, what=f"{len(markers)} dead letters")
    return found


def test_the_generator_is_deterministic() -> None:
    first, second = generate(), generate()
    assert [(c.routing_key, c.body, c.props) for c in first] == [(c.routing_key, c.body, c.props) for c in second]
