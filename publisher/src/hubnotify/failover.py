"""One robust AMQP connection over the nodes of a RabbitMQ cluster (docs/operations.md, "RabbitMQ cluster").

``HUB_AMQP_URL`` may list several node URLs, comma-separated
(``amqp://u:p@rabbit-1/,amqp://u:p@rabbit-2/``). ``FailoverConnection`` is aio-pika's
``RobustConnection`` that connects to the first node that answers, and, when the node it
is connected to goes away, reconnects to the next one: every connection attempt tries
each node once, starting after the one that was lost. What aio-pika restores after a
reconnect (channels, their prefetch, declared queues and their consumers) is restored
the same way on the new node; reconnect callbacks run as for one node.

aio-pika gives no seam for "which URL next": the attempt itself
(``RobustConnection.__connect_transport``, name-mangled) is wrapped here, checked at import
so that an aio-pika without it fails loudly rather than silently sticking to one node.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import aio_pika
from aio_pika.connection import make_url
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

log = logging.getLogger("hubnotify.failover")

_ATTEMPT = "_RobustConnection__connect_transport"
_connect_transport = cast(
    "Callable[[aio_pika.RobustConnection], Awaitable[None]] | None",
    getattr(aio_pika.RobustConnection, _ATTEMPT, None),
)
if _connect_transport is None:  # pragma: no cover - an aio-pika this module was not written for
    raise ImportError(f"expected aio-pika's RobustConnection.{_ATTEMPT} (aio-pika 9.4-10.x)")


def split_urls(url: str) -> list[str]:
    """The node URLs of ``url`` (comma-separated, blanks ignored); ValueError if there is none."""
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if not urls:
        raise ValueError(f"expected one or more AMQP URLs separated by commas, got {url!r}")
    return urls


class FailoverConnection(aio_pika.RobustConnection):
    """A ``RobustConnection`` over several node URLs; see the module docstring.

    ``node`` is the URL in use (or being tried), ``failovers`` counts moves from one node
    to another after a lost connection. Every URL must lead to the same cluster (same
    user, virtual host and TLS settings): queues and exchanges are the cluster's.
    """

    def __init__(self, urls: Sequence[str | URL], **kwargs: Any) -> None:
        if not urls:
            raise ValueError("expected at least one AMQP URL")
        self._urls = [make_url(url) for url in urls]
        self._index = 0
        self.failovers = 0
        super().__init__(self._urls[0], **kwargs)

    @property
    def node(self) -> URL:
        return self._urls[self._index]

    async def _on_connection_close(self, closing: Any) -> None:
        if self.connected.is_set() and not (self._close_called or self.is_closed) and len(self._urls) > 1:
            # A connection that was up is lost; its node may be gone: begin with the next one.
            self._index = (self._index + 1) % len(self._urls)
            self.failovers += 1
        await super()._on_connection_close(closing)

    async def _RobustConnection__connect_transport(self) -> None:
        """One attempt per node, from the current one on; raises the last node's error."""
        assert _connect_transport is not None
        error: BaseException | None = None
        first = self._index
        for step in range(len(self._urls)):
            self._index = (first + step) % len(self._urls)
            self.url = self._urls[self._index]
            try:
                await _connect_transport(self)
            except CONNECTION_EXCEPTIONS as exc:
                if len(self._urls) > 1:  # with one node the caller's own error says it all
                    log.info("RabbitMQ node %s:%s not reachable: %r", self.url.host, self.url.port, exc)
                error = exc
                continue
            return
        self._index = (first + 1) % len(self._urls)  # the next round begins elsewhere
        assert error is not None
        raise error


async def connect_failover(url: str, *, attempt_timeout: float | None = None, **kwargs: Any) -> FailoverConnection:
    """Connect to the first reachable node of ``url`` (one or more comma-separated URLs), each
    attempt bounded by ``attempt_timeout`` seconds; raise the last node's error when none answers (the
    connection is then closed: nothing keeps reconnecting in the background)."""
    connection = FailoverConnection(split_urls(url), **kwargs)
    try:
        await connection.connect(timeout=attempt_timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await connection.close()
        raise
    return connection
