"""Publishing AMQP messages byte by byte, as a hostile or buggy publisher in any language can.

aio-pika and pamqp refuse to encode what the hub must survive (a ``message_id`` that is
not UTF-8, a header table with a non-UTF-8 key, a routing key of raw bytes), so these
helpers build the three frames of a ``basic.publish`` themselves (AMQP 0-9-1 §4.2.3,
§4.2.6) and queue them on an aiormq channel's writer. The channel must not be in confirm
mode (the frames bypass aiormq's confirm bookkeeping); callers observe the outcome on
the broker (the dead-letter queue), not through a confirm.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import aiormq
from aiormq.abc import ChannelFrame

#: Basic.Properties in wire order, with their flag bits (AMQP 0-9-1 §4.2.6.1).
PROPERTY_FLAGS: dict[str, int] = {
    "content_type": 0x8000,
    "content_encoding": 0x4000,
    "headers": 0x2000,
    "delivery_mode": 0x1000,
    "priority": 0x0800,
    "correlation_id": 0x0400,
    "reply_to": 0x0200,
    "expiration": 0x0100,
    "message_id": 0x0080,
    "timestamp": 0x0040,
    "message_type": 0x0020,
    "user_id": 0x0010,
    "app_id": 0x0008,
}
SHORT_STRINGS = frozenset(
    {
        "content_type",
        "content_encoding",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "message_type",
        "user_id",
        "app_id",
    }
)


def short_str(value: bytes) -> bytes:
    """An AMQP short string: length octet, then the bytes as they are."""
    assert len(value) <= 255
    return bytes([len(value)]) + value


def long_str(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def table(entries: Mapping[bytes, bytes]) -> bytes:
    """A field table from raw keys and already-encoded values (type tag included)."""
    body = b"".join(short_str(key) + value for key, value in entries.items())
    return struct.pack(">I", len(body)) + body


def nested_table(depth: int) -> bytes:
    """A header table nested ``depth`` deep: {"a": {"a": ... {}}}."""
    inner = struct.pack(">I", 0)
    for _ in range(depth):
        body = short_str(b"a") + b"F" + inner
        inner = struct.pack(">I", len(body)) + body
    return inner


def properties(**fields: bytes | int) -> bytes:
    """Encoded Basic.Properties: short strings given as raw bytes, ``headers`` as an encoded
    table, ``delivery_mode``/``priority`` as ints, ``timestamp`` as an int (seconds)."""
    flags = 0
    parts: list[bytes] = []
    for name, flag in PROPERTY_FLAGS.items():
        if name not in fields:
            continue
        value = fields[name]
        flags |= flag
        if name in SHORT_STRINGS:
            assert isinstance(value, bytes)
            parts.append(short_str(value))
        elif name == "headers":
            assert isinstance(value, bytes)
            parts.append(value)
        elif name == "timestamp":
            assert isinstance(value, int)
            parts.append(struct.pack(">Q", value))
        else:
            assert isinstance(value, int)
            parts.append(struct.pack(">B", value))
    unknown = set(fields) - set(PROPERTY_FLAGS)
    assert not unknown, f"unknown properties {unknown}"
    return struct.pack(">H", flags) + b"".join(parts)


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def publish_frames(
    channel: int, exchange: bytes, routing_key: bytes, props: bytes, body: bytes, max_body_frame: int = 131_064
) -> bytes:
    """The method, content-header and body frames (each at most ``max_body_frame`` bytes of
    body: the connection's frame_max less 8) of one ``basic.publish``."""
    method = struct.pack(">HHH", 60, 40, 0) + short_str(exchange) + short_str(routing_key) + b"\x00"
    header = struct.pack(">HHQ", 60, 0, len(body)) + props
    frames = [_frame(1, channel, method), _frame(2, channel, header)]
    frames += [_frame(3, channel, body[i : i + max_body_frame]) for i in range(0, len(body), max_body_frame)]
    return b"".join(frames)


async def publish_raw(
    channel: aiormq.abc.AbstractChannel,
    exchange: str,
    routing_key: bytes | str,
    body: bytes,
    props: bytes | None = None,
) -> None:
    """Queue one raw ``basic.publish`` on ``channel`` (not in confirm mode) and wait until
    it is written; a round trip afterwards (any synchronous method) orders it before what
    follows on the same channel."""
    assert not channel.publisher_confirms, "raw publishes bypass confirms: use a channel without them"
    key = routing_key.encode() if isinstance(routing_key, str) else routing_key
    assert isinstance(channel, aiormq.Channel)
    payload = publish_frames(
        channel.number, exchange.encode(), key, props or properties(), body, channel.max_content_size
    )
    drained = channel.create_future()
    await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False, drain_future=drained))
    await drained
