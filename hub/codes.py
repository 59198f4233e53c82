"""WebSocket close codes of protocol v1: the one place they are defined.

Mirrored in ``client-js/src/codes.ts``; change both together.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Why the hub closed a socket, and therefore what the client should do next."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the peer went silent (ping timeout) or the server left
    INTERNAL_ERROR = 1011
    FRAME_TOO_BIG = 1009
    SERVICE_RESTART = 1012  # replica restarting: reconnect elsewhere at once
    TRY_AGAIN_LATER = 1013  # overloaded: reconnect later, with backoff
    BAD_TOKEN = 4001  # bad or missing token, or no connect frame in time
    PROTOCOL_ERROR = 4002  # a frame the hub cannot read or did not expect
    FORBIDDEN = 4003  # a topic the token does not allow
    LIMIT = 4008  # frame rate or connections-per-user limit
    TOKEN_EXPIRED = 4009  # the token expired and no refresh came in time
