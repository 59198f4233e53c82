"""The seam between a session and whatever carries its frames (docs/protocol.md §3, §10).

A session does not care whether its frames travel on a WebSocket (hub/transport.py) or
as Server-Sent Events with client frames arriving by HTTP POST (hub/sse.py): it talks
to a ``Channel``. Both implementations keep the same contract: one writer, frames in
order, a deadline on every send, and ``PeerGone`` (hub/transport.py) as the one way of
saying the client is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from hub.protocol import Wire


class Channel(Protocol):
    """Carries one connection's frames both ways."""

    #: Notification frames queued by ``write`` and not yet sent.
    backlog: int
    #: True once the close is sent.
    closed: bool

    @property
    def lost(self) -> bool:
        """True once the peer is known to be gone (nothing more will be sent)."""
        ...

    async def accept(self, subprotocol: str | None) -> None:
        """Open the channel (a WebSocket's 101); raises PeerGone."""
        ...

    async def receive(self) -> Wire:
        """The next frame from the client; raises PeerGone once it is gone."""
        ...

    async def write(self, frames: Sequence[Wire], then: Callable[[], None] | None = None) -> None:
        """Send ``frames`` after everything queued before, without waiting on the client;
        ``then`` runs once they are sent. Raises PeerGone."""
        ...

    @property
    def sends_at_once(self) -> bool:
        """True when ``write_at_once`` may be used now: frames can be sent in the caller's task
        (a WebSocket: hub/transport.py; never SSE) and nothing is queued or being sent."""
        ...

    def write_at_once(self, frame: Wire, then: Callable[[], None]) -> None:
        """``write`` of one frame without awaiting, only when ``sends_at_once``: sent now if the
        socket takes it, else queued; ``then`` runs once it is sent. Never raises."""
        ...

    def ping(self, frame: Wire) -> None:
        """Queue a ping unless one is already waiting."""
        ...

    async def flush(self) -> None:
        """Wait until everything queued is sent; raises PeerGone."""
        ...

    async def close(self, code: int, reason: str, farewell: Wire) -> None:
        """Send ``farewell`` (the ``error`` frame) and the close with ``code``; best effort."""
        ...

    async def discard(self) -> None:
        """Drop what is queued and stop; afterwards the channel holds no task."""
        ...


#: Makes a session's channel: ``(send_timeout, on_lost)`` → Channel; ``on_lost`` is called
#: once, when a send finds the peer gone.
ChannelFactory = Callable[[float, Callable[[], None]], Channel]
