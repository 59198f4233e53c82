"""Who is online, read straight from Redis, kept importable under its old name.

It lives in the light distribution ``notification-hub-publisher`` as ``hubnotify.presence``
(docs/protocol.md §6); new code imports it from there.
"""

from __future__ import annotations

from hubnotify.presence import (
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT,
    connections_many,
    is_online,
    is_online_async,
    online_many,
    online_many_async,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "connections_many",
    "is_online",
    "is_online_async",
    "online_many",
    "online_many_async",
]
