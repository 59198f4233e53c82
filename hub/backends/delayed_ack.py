"""Acks that go late, many in one: the sequencer's acks of ``hub.ingest`` (docs/protocol.md §5).

A consumer that acks each batch it finishes sends an ack frame, and costs the broker an
ack, per batch. ``DelayedAck`` keeps the newest finished delivery and acks it ``delay``
seconds after the first one was kept, with ``multiple``: one frame covers every
delivery finished meanwhile on its channel (about 8 batches at 1,000 notifications/s
with 10 ms; docs/benchmarks.md, fourth round).

What is acked late comes back redelivered if the channel or connection goes first,
which the consumer must take (the sequencer's stream answers a redelivered id with the
offset it already has). ``settle`` acks at once and waits for the write, for a consumer
about to close its channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiormq
from aiormq.abc import DeliveredMessage

log = logging.getLogger("hub.sequencer")


class DelayedAck:
    """The ack of the newest finished delivery, written within ``delay`` seconds."""

    __slots__ = ("_delay", "_newest", "_timer")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._newest: DeliveredMessage | None = None
        self._timer: asyncio.TimerHandle | None = None

    def done(self, message: DeliveredMessage) -> None:
        """``message``, and every delivery before it on its channel, is finished: ack it
        within ``delay``, with whatever is finished meanwhile."""
        self._newest = message
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)

    def flush(self) -> None:
        """Write the pending ack now, not waiting for the write: frames leave in order, so it
        goes before anything the channel sends later."""
        message = self._take()
        if message is not None:
            write = asyncio.ensure_future(message.channel.basic_ack(_tag(message), multiple=True, wait=False))
            write.add_done_callback(_log_failed)

    async def settle(self, within: float) -> None:
        """Write the pending ack and wait until it is written (at most ``within`` seconds; a
        channel that closed or stalled meanwhile gives its deliveries back, redelivered)."""
        message = self._take()
        if message is None:
            return
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError):
            async with asyncio.timeout(within):
                await message.channel.basic_ack(_tag(message), multiple=True)

    def _take(self) -> DeliveredMessage | None:
        """The delivery the pending ack is for, and no more pending ack; None when there is
        none, or when its channel closed (its unacked deliveries come back redelivered)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        message, self._newest = self._newest, None
        return None if message is None or message.channel.is_closed else message


def _tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None, "expected a delivery (basic.deliver), got a message without a tag"
    return tag


def _log_failed(write: asyncio.Future[None]) -> None:
    if not write.cancelled() and write.exception() is not None:  # the channel closed: redelivered
        log.debug("ack not written: %r", write.exception())
