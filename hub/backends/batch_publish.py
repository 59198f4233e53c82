"""A batch of confirmed publishes on one aiormq channel, written as one frame buffer (the sequencer's live hop).

aiormq's ``basic_publish`` costs, per message: a coroutine the caller must run as a task
(to publish a batch without waiting for each confirm in turn), the channel lock, pamqp's
marshalling and validation of three frames, a random ``message_id`` (set on the caller's
properties object, so on every later message too) and a write-queue item of its own. The
profile of the distributed hub under load put that at ~12 % of the hub process
(docs/benchmarks.md, issue 12).

``BatchPublisher.publish`` does the same for N messages with one lock, one write-queue
item and no task: the frames are built here (the method frame from the exchange and
routing key, the content header from properties marshalled once, the body split at the
connection's ``frame_max``), byte for byte what pamqp builds (tests/test_batch_publish.py),
and each message gets the confirmation future aiormq's reader settles by delivery tag
(``Channel.confirmations``): an ack resolves it, a nack raises ``DeliveryError``, a
closing channel rejects it (the channel's future store), exactly as with ``basic_publish``.
Messages carry no ``message_id`` (nothing reads one on the live hop).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Final

import aiormq
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

_FRAME: Final = struct.Struct(">BHI")  # frame type, channel, payload size
_END: Final = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
#: Basic.Publish: class 60, method 40, reserved ticket 0.
_PUBLISH: Final = struct.pack(">HHH", 60, 40, 0)
_HEADER_HEAD: Final = struct.Struct(">HHQ")  # class 60, weight 0, body size


def _short(text: str, what: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"expected a {what} of at most 255 bytes, got {len(raw)}")
    return bytes((len(raw),)) + raw


class BatchPublisher:
    """Publishes batches to one exchange with fixed properties (see module doc)."""

    __slots__ = ("_exchange", "_properties")

    def __init__(self, exchange: str, properties: Basic.Properties) -> None:
        self._exchange = _short(exchange, "exchange name")
        # The content header's payload after class, weight and body size: flags and properties.
        self._properties = ContentHeader(0, 0, properties).marshal()[_HEADER_HEAD.size :]

    def frames(self, channel: int, max_content: int, messages: Sequence[tuple[str, bytes]]) -> bytes:
        """The frames publishing ``(routing_key, body)`` messages in order on ``channel``, bodies
        split in frames of at most ``max_content`` bytes; raises ValueError for a routing key
        longer than 255 bytes (before anything is written)."""
        parts: list[bytes] = []
        add = parts.append
        head = _PUBLISH + self._exchange
        for routing_key, body in messages:
            method = head + _short(routing_key, "routing key") + b"\x00"  # mandatory, immediate: no
            header = _HEADER_HEAD.pack(60, 0, len(body)) + self._properties
            add(_FRAME.pack(_METHOD, channel, len(method)))
            add(method)
            add(_END)
            add(_FRAME.pack(_HEADER, channel, len(header)))
            add(header)
            add(_END)
            for start in range(0, len(body), max_content):
                chunk = body[start : start + max_content]
                add(_FRAME.pack(_BODY, channel, len(chunk)))
                add(chunk)
                add(_END)
        return b"".join(parts)

    async def publish(
        self, channel: aiormq.Channel, messages: Sequence[tuple[str, bytes]]
    ) -> list[asyncio.Future[object]]:
        """Write ``messages`` (``(routing_key, body)``, in this order) on ``channel``, which must
        have publisher confirms; return their confirmation futures, in the same order.

        Returns once the frames are queued for the connection's writer (nothing is published
        if this raises: the channel closed, or a routing key too long). Each future resolves
        when the broker acks its message and raises ``DeliveryError`` on a nack or the
        channel's close error when it closes first. The caller must await them (or let them
        go: aiormq retrieves their exceptions).
        """
        if not channel.publisher_confirms:
            raise ValueError(f"expected a channel with publisher confirms, got {channel!r}")
        if not messages:
            return []
        async with channel.lock:  # raises ChannelInvalidStateError when the channel is closed
            payload = self.frames(channel.number, channel.max_content_size, messages)
            # The writer's queue is bounded: this may wait. Nothing is registered before the
            # frames are queued, so a cancellation here publishes nothing and leaks nothing.
            await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))
            futures: list[asyncio.Future[object]] = []
            tag = channel.delivery_tag
            for _ in messages:  # no await from the put to here: no confirm can come first
                tag += 1
                future = channel.create_future()
                channel.confirmations[tag] = future
                futures.append(future)
            channel.delivery_tag = tag
        return futures
