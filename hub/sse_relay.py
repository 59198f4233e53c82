"""Client frames of SSE streams, routed to the replica that holds the stream (docs/protocol.md §10).

A ``POST /sse/<stream>`` may reach any replica behind the balancer. The stream's handle
names its replica, so the replica that took the POST either hands the frame to the
local stream or, on the distributed backend, publishes it on that replica's Redis
channel (``<prefix>sse:relay:<replica>``), which every replica listens on. ``PUBLISH``
answers how many listened: none means the replica is gone, and so is the stream (404;
the client's stream has ended too and it reconnects). The embedded backend is one
replica: a stream that is not here does not exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import logging
import re
from typing import Protocol

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from hub.backends.redis_client import RedisClient, deadline
from hub.payload import BadPayload, dumps_json, loads_json

log = logging.getLogger("hub.sse_relay")

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class Inbox(Protocol):
    """A stream that takes client frames (``hub.sse.SseTransport``)."""

    def offer(self, frame: str) -> bool:
        """Queue ``frame`` for the session; False when it cannot take more now."""
        ...


class Routed(enum.Enum):
    """What became of a frame: the HTTP status of the POST."""

    ACCEPTED = 202
    GONE = 404
    BUSY = 429


def make_handle(conn_id: str, replica: str) -> str:
    """The stream's name in ``POST /sse/<handle>``: its connection id and replica."""
    return f"{conn_id}.{base64.urlsafe_b64encode(replica.encode()).decode().rstrip('=')}"


def split_handle(handle: str) -> tuple[str, str] | None:
    """``(conn_id, replica)`` of a handle, or None when it is not one."""
    conn_id, _, encoded = handle.partition(".")
    if not conn_id.isalnum() or not _BASE64URL.fullmatch(encoded) or len(handle) > 400:
        return None
    try:
        replica = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (conn_id, replica) if replica else None


class Relay:
    """This replica's streams, and the way to reach the others'."""

    def __init__(self, replica: str, redis: RedisClient | None, *, prefix: str, timeout: float) -> None:
        self.replica = replica
        self.streams: dict[str, Inbox] = {}
        self._redis = redis
        self._channel = f"{prefix}sse:relay:"
        self._timeout = timeout
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def start(self) -> None:
        """Listen for frames other replicas route here (distributed only); idempotent."""
        if self._redis is not None and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(self._redis))
            try:  # a short wait, never the replica's start-up: the listener keeps trying by itself
                async with asyncio.timeout(min(self._timeout, 1.0)):
                    await self._listening.wait()
            except TimeoutError:
                log.warning("the SSE relay is not subscribed yet: POSTs to this replica's streams may get 404")

    async def close(self) -> None:
        """Stop listening; awaits the listener at most the Redis deadline (a listener stuck
        on a sick Redis is left behind, logged)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            done, _ = await asyncio.wait((listener,), timeout=self._timeout)
            if not done:
                log.warning("the SSE relay's listener did not stop within %g s; left behind", self._timeout)

    async def route(self, conn_id: str, replica: str, frame: str) -> Routed:
        """Hand ``frame`` to stream ``conn_id`` on ``replica``; raises BackendUnavailable."""
        if replica == self.replica:
            return self._deliver(conn_id, frame)
        if self._redis is None:
            return Routed.GONE
        async with deadline("the SSE relay", self._timeout):
            listeners = await self._redis.publish(self._channel + replica, dumps_json({"c": conn_id, "f": frame}))
        return Routed.ACCEPTED if listeners else Routed.GONE

    def _deliver(self, conn_id: str, frame: str) -> Routed:
        stream = self.streams.get(conn_id)
        if stream is None:
            return Routed.GONE
        return Routed.ACCEPTED if stream.offer(frame) else Routed.BUSY

    async def _listen(self, redis: RedisClient) -> None:
        """Subscribe and deliver, riding out Redis outages (redis-py resubscribes on reconnect)."""
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            while True:
                try:
                    if not pubsub.subscribed:
                        if isinstance(redis, RedisCluster):
                            # its pub/sub picks a node from the slot table, loaded by a first command
                            await redis.initialize()
                        await pubsub.subscribe(self._channel + self.replica)
                        self._listening.set()
                    message = await pubsub.get_message(timeout=1.0)
                except (RedisError, OSError, KeyError) as exc:  # KeyError: a cluster client's stale slot map
                    log.warning("SSE relay: Redis did not answer (%r); retrying in 1 s", exc)
                    await asyncio.sleep(1.0)  # a retry delay, not synchronisation
                    continue
                if message is not None and message.get("type") == "message":
                    self._relayed(message["data"])
        finally:
            with contextlib.suppress(Exception):  # closing anyway: a stuck Redis is given one deadline
                async with asyncio.timeout(self._timeout):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _relayed(self, data: bytes | str) -> None:
        try:
            item = loads_json(data if isinstance(data, str) else data.decode())
            conn_id, frame = item["c"], item["f"]
            if not isinstance(conn_id, str) or not isinstance(frame, str):
                raise TypeError("expected strings")
        except (BadPayload, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("SSE relay: unreadable message dropped (%r)", exc)
            return
        if self._deliver(conn_id, frame) is not Routed.ACCEPTED:
            log.debug("SSE relay: stream %s is gone or busy: frame dropped", conn_id)
