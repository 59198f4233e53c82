"""Publishing until RabbitMQ has taken a message (docs/protocol.md §4; docs/operations.md, "RabbitMQ cluster").

A confirm (``basic.ack``) alone does not say a queue took the message: RabbitMQ confirms
and drops what it cannot route, and on a cluster that includes a message for a classic
``hub.ingest`` whose node is down. With ``mandatory`` such a message comes back
(``basic.return``) before its confirm, and ``ConfirmingExchange.publish`` publishes it
again (same message, same ``message_id``: the sequencer drops a duplicate) until a queue
takes it or the deadline passes. A ``basic.nack`` (a channel opened while a quorum queue
elects its leader can nack every publish until it is replaced) makes it open a fresh
channel and publish again. A dropped connection: again once aio-pika has reconnected
(to another node of the cluster, ``hubnotify.failover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import aio_pika
import aiormq
from aio_pika.abc import AbstractExchange
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

log = logging.getLogger("hubnotify.confirm")

PAUSE_FIRST: Final = 0.05
PAUSE_MAX: Final = 1.0


class Unroutable(RuntimeError):
    """RabbitMQ returned the message (no queue took it) until the deadline: no hub has
    started on this virtual host yet, or the ingest queue's node is down (a classic
    queue on a cluster), or history is off and nobody listens to the topic."""


class ConfirmingExchange:
    """An exchange on a confirming channel, that ``publish`` replaces when it nacks.

    ``open`` makes the handle: it opens a channel with ``publisher_confirms=True`` and
    ``on_return_raises=True`` and returns its exchange. Counters: ``returns``,
    ``nacks``, ``replaced`` (channels replaced), ``retries``.
    """

    def __init__(self, open: Callable[[], Awaitable[AbstractExchange]]) -> None:
        self._open = open
        self._exchange: AbstractExchange | None = None
        self._replacing: asyncio.Lock = asyncio.Lock()
        self.returns = self.nacks = self.replaced = self.retries = 0

    async def start(self) -> AbstractExchange:
        self._exchange = await self._open()
        return self._exchange

    @property
    def exchange(self) -> AbstractExchange:
        if self._exchange is None:
            raise RuntimeError("expected 'await ConfirmingExchange.start()' before publishing")
        return self._exchange

    async def publish(
        self, message: aio_pika.abc.AbstractMessage, routing_key: str, *, mandatory: bool, seconds: float | None
    ) -> None:
        """Return once the broker confirmed ``message`` and (with ``mandatory``) did not return
        it; publish again as the module docstring says until ``seconds`` pass. Past them:
        TimeoutError (no answer), ``Unroutable`` (returned), or the last error (nacked, or
        the connection down)."""
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        pause = PAUSE_FIRST
        while True:
            exchange = self.exchange
            replace = False
            try:
                async with asyncio.timeout_at(deadline):
                    await exchange.publish(message, routing_key=routing_key, mandatory=mandatory)
                return
            except TimeoutError:
                raise
            except aiormq.exceptions.PublishError:
                self.returns += 1
                error: BaseException = Unroutable(
                    f"RabbitMQ returned the message for {routing_key!r}: no queue took it"
                    f"{'' if seconds is None else f' within {seconds:g} s'}"
                )
            except aiormq.exceptions.DeliveryError as exc:
                self.nacks += 1
                replace, error = True, exc
            except CONNECTION_EXCEPTIONS as exc:
                error = exc
            if deadline is not None and loop.time() + pause >= deadline:
                raise error
            self.retries += 1
            log.info("publish to %r not taken (%r); publishing again", routing_key, error)
            if replace:
                await self._replace(exchange, deadline)
            await asyncio.sleep(pause)  # backoff between attempts
            pause = min(2 * pause, PAUSE_MAX)

    async def _replace(self, broken: AbstractExchange, deadline: float | None) -> None:
        """A fresh channel instead of one that nacks (once, for every publish that saw it)."""
        async with self._replacing:
            if self._exchange is not broken:
                return
            try:
                async with asyncio.timeout_at(deadline):
                    self._exchange = await self._open()
            except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
                log.info("could not replace a nacking channel yet: %r", exc)
                return
            self.replaced += 1
            channel = getattr(broken, "channel", None)  # aio-pika's Exchange keeps its channel
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
