"""The AMQP connection's writes, coalesced: what one loop turn sends goes out in one write.

aiormq writes every frame (a publish, an ack, a declare) with its own ``write`` on the
socket: one system call for the hub and one TCP segment for RabbitMQ to read, per
frame. The sequencer publishes a whole batch at once and the live slots ack in one go,
so many frames are written in the same loop turn; ``CoalescingWriter`` keeps them and
writes them together at the end of that turn (``loop.call_soon``). Order is kept, and
nothing waits longer than the loop turn it was written in. ``drain``, ``close`` and
``write_eof`` write what is kept first, so a frame aiormq waits on (the connection's
close) is never held back.

Installed through aiormq's public ``TransportFactory`` seam (``transport_factory``);
``install`` puts it on an aio-pika connection, for its first connect and every
reconnect.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aio_pika
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from yarl import URL


class CoalescingWriter:
    """A ``StreamWriter`` whose ``write``s of one loop turn become one write (see module doc)."""

    __slots__ = ("_flush_handle", "_inner", "_kept", "_loop")

    def __init__(self, inner: asyncio.StreamWriter) -> None:
        self._inner = inner
        self._kept: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        self._kept.append(data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(bytes(chunk))

    def _flush(self) -> None:
        self._flush_handle = None
        kept, self._kept = self._kept, []
        if not kept or self._inner.is_closing():
            return  # a closed socket: the connection's reader reports it, as without coalescing
        self._inner.write(kept[0] if len(kept) == 1 else b"".join(kept))

    def _flush_now(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    async def drain(self) -> None:
        self._flush_now()
        await self._inner.drain()

    def close(self) -> None:
        self._flush_now()
        self._inner.close()

    def write_eof(self) -> None:
        self._flush_now()
        self._inner.write_eof()

    def __getattr__(self, name: str) -> Any:  # transport, is_closing, wait_closed, get_extra_info, …
        return getattr(self._inner, name)


class CoalescingTransportFactory(TransportFactory):
    """aiormq's TCP or TLS transport (by the URL's scheme) with a ``CoalescingWriter``."""

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        inner: TransportFactory = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        reader, writer = await inner.create(url, **kwargs)
        return reader, cast(asyncio.StreamWriter, CoalescingWriter(writer))


def install(connection: aio_pika.Connection) -> None:
    """Coalesce the writes of ``connection`` (before its ``connect``; kept for every reconnect)."""
    connection.kwargs["transport_factory"] = CoalescingTransportFactory()
