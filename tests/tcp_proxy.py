"""A TCP proxy that a test can cut, stall and restore: fault injection for RabbitMQ and Redis.

Three states:

- up: every connection is forwarded both ways;
- cut (``cut()``): every proxied connection is aborted and new ones are refused, as when
  the service is down or its host unreachable with an RST;
- stalled (``stall()``): nothing moves any more, but nothing is closed either: existing
  connections stop forwarding (bytes already read are held) and new ones are accepted
  and held without even opening the upstream side, as when the service hangs or a
  firewall drops packets silently. The client only finds out through its own deadlines.

``restore()`` goes back up: held bytes are forwarded and held connections are joined to
the upstream, as when a partition heals and TCP survived it. ``cut()`` then ``restore()``
models a stall that ended with the connections dead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; see the module docstring for its states."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.up = True
        self.accepted = 0
        self.held = 0
        self.port = 0

    @property
    def stalled(self) -> bool:
        return self.up and not self._flowing.is_set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        self.accepted += 1
        self._writers.add(writer)
        try:
            if not self._flowing.is_set():
                self.held += 1  # accepted, never answered until restore()
                await self._flowing.wait()
            if not self.up:  # cut while held
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
            except OSError:
                return
            self._writers.add(up_writer)
            pipes = [
                asyncio.create_task(self._pipe(reader, up_writer)),
                asyncio.create_task(self._pipe(up_reader, writer)),
            ]
            self._tasks.update(pipes)
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in pipes:
                pipe.cancel()
            up_writer.close()
            self._writers.discard(up_writer)
            self._tasks.difference_update(pipes)
        finally:
            writer.close()
            self._writers.discard(writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()  # read before the stall began: held until restore
                writer.write(data)
                await writer.drain()

    def cut(self) -> None:
        """Close every proxied connection (both sides) and refuse new ones until ``restore``."""
        self.up = False
        self._flowing.set()  # held connections wake up, see ``up`` is False and close
        for writer in list(self._writers):
            writer.transport.abort()

    def stall(self) -> None:
        """Stop forwarding on every connection and hold new ones, closing nothing."""
        self.up = True
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again (what a stall held goes through) and accept new connections."""
        self.up = True
        self._flowing.set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()


def via(url: str, port: int) -> str:
    """``url`` (AMQP or Redis, credentials kept) pointed at 127.0.0.1:``port`` (a proxy's)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@contextlib.asynccontextmanager
async def proxied(url: str, default_port: int = 5672) -> AsyncIterator[TcpProxy]:
    """A started proxy to the service of ``url``, closed afterwards."""
    parts = urlsplit(url)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port).start()
    try:
        yield proxy
    finally:
        await proxy.close()
