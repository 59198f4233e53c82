"""Cost per message of the strict wire format, before and after, in one run (no server).

"Before" is the code this replaced, kept here verbatim in spirit: pamqp's own content
header decoding, ``json.loads`` / ``msgpack.unpackb`` for bodies (hub/backends/amqp_codec.py
until the wire module), ``json.loads`` for live frames. "After" is ``hub.amqp_decode`` and
``hub.wire``. Each figure is the best of several rounds, in µs per message.

    .venv/bin/python scripts/bench_wire.py
"""

from __future__ import annotations

import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aio_pika
import msgpack
from aio_pika.message import IncomingMessage
from aiormq.abc import DeliveredMessage
from pamqp import commands, header

from hub import amqp_decode, wire
from hub.protocol import json_dumps
from hub.topics import validate_topic

ROUNDS = 15


def best(call: Callable[[], object], number: int = 10_000) -> float:
    """µs of CPU per call (process time: other processes on the machine do not count), best of ``ROUNDS``."""
    return min(timeit.repeat(call, number=number, repeat=ROUNDS, timer=time.process_time)) / number * 1e6


def header_payload(properties: commands.Basic.Properties) -> bytes:
    return header.ContentHeader(body_size=100, properties=properties).marshal()


def stock_header(data: bytes) -> header.ContentHeader:
    content_header = header.ContentHeader()
    content_header.unmarshal(data)
    return content_header


def old_decode_body(body: bytes, content_type: str | None) -> tuple[str, Any]:
    """hub/backends/amqp_codec.py's decode_body (lenient) as it was."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in wire.MSGPACK_TYPES:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True)
        return json_dumps(value), value
    text = body.decode("utf-8")
    if not kind.startswith("text/"):
        try:
            return text, json.loads(text)
        except ValueError:
            pass
    return json_dumps(text), text


def old_ingest_message(payload: bytes, body: bytes, now: int) -> tuple[str, str, int, str]:
    """The old consume path per message: pamqp's header, aio-pika's message, the sequencer's loop."""
    delivered = DeliveredMessage(delivery=DELIVER, header=stock_header(payload), body=body, channel=None)  # type: ignore[arg-type]
    message = IncomingMessage(delivered)
    topic = validate_topic(message.routing_key)
    data_json, _ = old_decode_body(message.body, message.content_type)
    ts = (message.headers or {}).get("ts")
    ts = ts if isinstance(ts, int) and not isinstance(ts, bool) else now
    return topic, message.message_id or "new", ts, data_json


def new_ingest_message(payload: bytes, body: bytes, now: int) -> wire.Publish:
    """The new one: the tolerant header, then ``read_publish`` (the sequencer builds no message object)."""
    return wire.read_publish("user.42", amqp_decode.unmarshal_header(payload), body, now=now)


DELIVER = commands.Basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="notifications", routing_key="user.42")


def old_live(body: bytes) -> Any:
    frame = json.loads(body.decode("utf-8"))
    return wire.LiveNotification(
        id=frame["id"],
        topic=frame["topic"],
        offset=frame.get("offset"),
        ts=frame["ts"],
        data=frame["data"],
        json_text="",
    )


def old_message(data: Any, message_id: str) -> commands.Basic.Properties:
    message = aio_pika.Message(
        json_dumps(data).encode(),
        content_type="application/json",
        message_id=message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=60,
        headers={"ts": 1},
    )
    return message.properties


def new_message(data: Any, message_id: str) -> commands.Basic.Properties:
    message, _ = wire.build_message(data, message_id=message_id, ttl=60)
    return message.properties


def main() -> None:
    now = 1_750_000_000_000
    typical = commands.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="0123456789abcdef0123456789abcdef",
        headers={"ts": now},
    )
    x_death = commands.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="m-1",
        headers={
            "ts": now,
            "x-death": [{"count": 1, "reason": "rejected", "queue": "q", "exchange": "", "routing-keys": ["q"]}],
        },
    )
    data = {"type": "order.shipped", "order": 1234, "text": "Your order shipped", "items": [1, 2, 3]}
    body_json = json.dumps(data).encode()
    body_msgpack = msgpack.packb(data)
    live = wire.json_frame("0123456789abcdef", "user.42", "1750000000000-0", now, body_json.decode()).encode()
    typical_payload = header_payload(typical)
    x_death_payload = header_payload(x_death)
    deep_json = b"[" * 3000 + b"]" * 3000

    rows = [
        (
            "content header, typical publisher",
            lambda: stock_header(typical_payload),
            lambda: amqp_decode.unmarshal_header(typical_payload),
        ),
        (
            "content header, with x-death",
            lambda: stock_header(x_death_payload),
            lambda: amqp_decode.unmarshal_header(x_death_payload),
        ),
        (
            "JSON body",
            lambda: old_decode_body(body_json, "application/json"),
            lambda: wire.decode_body(body_json, "application/json"),
        ),
        (
            "msgpack body",
            lambda: old_decode_body(body_msgpack, "application/msgpack"),
            lambda: wire.decode_body(body_msgpack, "application/msgpack"),
        ),
        (
            "ingest message, whole (header, body, id, ts, topic)",
            lambda: old_ingest_message(typical_payload, body_json, now),
            lambda: new_ingest_message(typical_payload, body_json, now),
        ),
        ("live frame parse, per replica", lambda: old_live(live), lambda: wire.parse_live(live)),
        ("publisher message build", lambda: old_message(data, "m-1"), lambda: new_message(data, "m-1")),
    ]
    print(f"{'CPU per message':52} {'before µs':>10} {'after µs':>10}")
    for name, before, after in rows:
        print(f"{name:52} {best(before):10.2f} {best(after):10.2f}")
    refusal = best(lambda: _refuse(deep_json), 500)
    print(f"{'refusing JSON nested 3,000 deep (before: RecursionError)':52} {'':>10} {refusal:10.2f}")


def _refuse(body: bytes) -> None:
    try:
        wire.decode_body(body, "application/json")
    except wire.Refused:
        return


if __name__ == "__main__":
    main()
