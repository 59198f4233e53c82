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
and the batch gets one confirmation future, settled through the per-message stand-ins aiormq's
reader finds by delivery tag (``Channel.confirmations``): it resolves once every message
is acked, raises ``DeliveryError`` at a nack, and is rejected when the channel closes
(the channel's future store), as ``basic_publish``'s futures are.
Messages carry no ``message_id`` (nothing reads one on the live hop). ``BatchPublisher.send``
writes the same frames on a channel without confirms (fire and forget: presence events).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any, Final

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

    async def publish(self, channel: aiormq.Channel, messages: Sequence[tuple[str, bytes]]) -> asyncio.Future[None]:
        """Write ``messages`` (``(routing_key, body)``, in this order) on ``channel``, which must
        have publisher confirms; return one future for their confirms.

        Returns once the frames are queued for the connection's writer (nothing is published
        if this raises: the channel closed, or a routing key too long). The future resolves
        once the broker acked every message; it raises ``DeliveryError`` at the first nack,
        or the channel's close error when the channel closes first (the channel's future
        store rejects it). Await it, or let it go (aiormq retrieves its exception).
        """
        if not channel.publisher_confirms:
            raise ValueError(f"expected a channel with publisher confirms, got {channel!r}")
        async with channel.lock:  # raises ChannelInvalidStateError when the channel is closed
            payload = self.frames(channel.number, channel.max_content_size, messages)
            batch = _Batch(channel.create_future(), len(messages))
            if not messages:
                batch.future.set_result(None)
                return batch.future
            # The writer's queue is bounded: this may wait. Nothing is registered before the
            # frames are queued, so a cancellation here publishes nothing and leaks nothing.
            try:
                await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))
            except BaseException:
                batch.future.cancel()
                raise
            confirmations: dict[int, Any] = channel.confirmations
            tag = channel.delivery_tag
            for _ in messages:  # no await from the put to here: no confirm can come first
                tag += 1
                confirmations[tag] = _Tag(batch)
            channel.delivery_tag = tag
        return batch.future

    async def send(self, channel: aiormq.Channel, messages: Sequence[tuple[str, bytes]]) -> None:
        """Write ``messages`` (``(routing_key, body)``, in this order) on ``channel``, which must
        not have publisher confirms: nothing is returned or awaited but the writer's queue.
        Raises what ``publish`` raises before writing (nothing is sent then)."""
        if channel.publisher_confirms:
            raise ValueError(f"expected a channel without publisher confirms, got {channel!r}")
        if not messages:
            return
        async with channel.lock:  # raises ChannelInvalidStateError when the channel is closed
            payload = self.frames(channel.number, channel.max_content_size, messages)
            await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))


class _Batch:
    """The confirms of one batch: its future resolves when every message is acked."""

    __slots__ = ("future", "left")

    def __init__(self, future: asyncio.Future[None], left: int) -> None:
        self.future = future
        self.left = left


class _Tag:
    """One message of a batch in aiormq's ``Channel.confirmations``, where its reader settles
    it as it would a future (``done``, ``set_result``, ``set_exception``): one small object
    per message instead of a future registered in the channel's and connection's stores."""

    __slots__ = ("_batch", "_done")

    def __init__(self, batch: _Batch) -> None:
        self._batch = batch
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, frame: object) -> None:  # an ack
        self._done = True
        batch = self._batch
        batch.left -= 1
        if batch.left == 0 and not batch.future.done():
            batch.future.set_result(None)

    def set_exception(self, exc: BaseException) -> None:  # a nack: the batch fails at once
        self._done = True
        if not self._batch.future.done():
            self._batch.future.set_exception(exc)
