"""What a session does with read state (docs/protocol.md §9): the ``unread`` counts of its
``connected`` frame and the client's ``read`` frames.

The session (hub/session.py) calls these two functions and nothing else of read state;
refusals come back as ``ProtocolError`` carrying the close code, like a bad frame, and a
store that does not answer within ``backend_timeout`` as ``BackendTimeout`` (1013).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hub.backends.base import Reads
from hub.codes import CloseCode
from hub.lease import BackendTimeout
from hub.protocol import ProtocolError, Read
from hub.read_frames import read_key


def subscription_keys(reads: Reads | None, user: str, topics: Sequence[str]) -> list[str]:
    """What a socket's live subscription binds: its topics, plus the user's read key when read
    state is kept (so every ``read`` change of the user reaches it, hub/read_frames.py)."""
    return [*topics, read_key(user)] if reads is not None else list(topics)


async def unread_counts(reads: Reads | None, user: str, topics: Sequence[str], limit: float) -> dict[str, int] | None:
    """The ``connected`` frame's ``unread`` map (None when read state is not kept)."""
    if reads is None:
        return None
    try:
        async with asyncio.timeout(limit):
            return await reads.unread(user, topics)
    except TimeoutError:
        raise BackendTimeout(f"read state did not answer within {limit:g} s") from None


async def mark_read(reads: Reads | None, user: str, topics: Sequence[str], frame: Read, limit: float) -> None:
    """Apply a client's ``read`` frame; the change reaches the user's sockets (this one too) as a
    ``read`` frame through the live path. Raises ProtocolError 4003 for a topic the connection
    does not have, 4002 when read state is not kept (history off)."""
    if reads is None:
        raise ProtocolError("read state is not kept on this hub (history is off)")
    if frame.topic not in topics:
        raise ProtocolError(f"topic {frame.topic!r} is not granted to this connection", CloseCode.FORBIDDEN)
    up_to = None if frame.up_to is None else str(frame.up_to)
    try:
        async with asyncio.timeout(limit):
            await reads.mark(user, frame.topic, up_to=up_to, offsets=[str(o) for o in frame.offsets])
    except TimeoutError:
        raise BackendTimeout(f"read state did not answer within {limit:g} s") from None
