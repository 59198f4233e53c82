"""Read state over Redis, next to the history streams (docs/protocol.md §9).

Layout under ``prefix``: ``<prefix>r:{<topic>}:<user>``, a hash per user and topic
(field ``c`` the cursor, one field per single mark; hub/backends/read_scripts.py). The
``{<topic>}`` hash tag puts it in the slot of the topic's stream under the cluster
convention (``<prefix>s:{<topic>}``), so one script reads both atomically. The hash
expires ``HUB_HISTORY_TTL`` after its last change: by then every notification it
refers to has left the history, and a cursor older than everything retained means
nothing (exact, never wrong).

Cost: ``unread`` is one script call per topic, sent in the shared ``RedisBatch``
(hub/backends/redis_batch.py) with the presence adds and history reads of the same loop
turn: a connect storm's counts travel in a few pipelines, not one each. ``mark`` is one
script call plus one AMQP publish (the ``announce`` callback: the ``read`` event on the
live path, to every socket of the user on every replica).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from hub.backends.base import ReadEntry, ReadState
from hub.backends.read_scripts import MARK, PAGE, UNREAD
from hub.backends.redis_batch import batch_for
from hub.backends.redis_client import RedisClient, deadline
from hub.backends.redis_history import JSON_KIND, RedisHistory, decode_data
from hub.notification import Notification
from hub.payload import BadPayload
from hub.read_frames import ReadEvent

Announce = Callable[[ReadEvent], Awaitable[None]]


class RedisReads:
    """The ``Reads`` seam over Redis; ``announce`` carries each change to the user's sockets.

    Shares the history's client (``decode_responses=False``) and its retention settings.
    Every call takes at most ``timeout`` seconds, then raises BackendUnavailable.
    """

    def __init__(
        self,
        redis: RedisClient,
        history: RedisHistory,
        *,
        prefix: str,
        size: int,
        ttl: float,
        timeout: float,
        announce: Announce,
    ) -> None:
        self._redis = redis
        self._history = history
        self._prefix = prefix
        self._size = size
        self._ttl_ms = int(ttl * 1000)
        self._timeout = timeout
        self._announce = announce
        self._batch = batch_for(redis, timeout)  # shared with presence and history
        self._unread = redis.register_script(UNREAD)
        self._mark = redis.register_script(MARK)
        self._page = redis.register_script(PAGE)
        self.round_trips = 0  # Redis round trips made (for bench/reads.py)

    def read_key(self, user: str, topic: str) -> str:
        """The Redis key of ``user``'s read state of ``topic``."""
        return f"{self._prefix}r:{{{topic}}}:{user}"

    def _keys(self, user: str, topic: str) -> list[str]:
        return [self._history.stream_key(topic), self.read_key(user, topic)]

    def _trim_args(self, topic: str) -> list[str | int]:
        # the history's own de-dup key names and retention: the shared trim keeps both exact
        horizon = self._history._horizon()
        return [self._history._dedup_prefix(topic), self._size, horizon]

    async def unread(self, user: str, topics: Sequence[str]) -> dict[str, int]:
        self.round_trips += 1
        script, batch = self._unread, self._batch
        async with deadline("unread counts", self._timeout):
            counts = await asyncio.gather(
                *(batch.script(script, self._keys(user, topic), self._trim_args(topic)) for topic in topics)
            )
        return {topic: int(n) for topic, n in zip(topics, counts, strict=True)}

    async def mark(self, user: str, topic: str, *, up_to: str | None, offsets: Sequence[str]) -> ReadState:
        args = [*self._trim_args(topic), self._ttl_ms, up_to or "", *offsets]
        self.round_trips += 1
        async with deadline("mark read", self._timeout):
            cursor, marks, unread = await self._mark(keys=self._keys(user, topic), args=args)
        state = ReadState(topic, cursor.decode(), tuple(m.decode() for m in marks), int(unread))
        await self._announce(ReadEvent(user, state))
        return state

    async def page(self, user: str, topic: str, *, before: str | None, limit: int) -> list[ReadEntry]:
        end = "+" if before is None else "(" + before
        self.round_trips += 1
        async with deadline("read page", self._timeout):
            cursor, marks, entries = await self._page(
                keys=self._keys(user, topic), args=[*self._trim_args(topic), end, limit]
            )
        read_up_to = _key(cursor)
        marked = {bytes(m) for m in marks}
        page: list[ReadEntry] = []
        for offset, fields in entries:
            notification = _notification(topic, offset, fields)
            if notification is not None:
                page.append(ReadEntry(notification, _key(offset) <= read_up_to or offset in marked))
        return page


def _key(offset: bytes) -> tuple[int, int]:
    ms, _, seq = offset.partition(b"-")
    return int(ms), int(seq)


def _notification(topic: str, offset: bytes, fields: list[bytes]) -> Notification | None:
    """A stream entry as a notification; None for one that cannot be read (never sent)."""
    try:
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        return Notification(
            id=values[b"i"].decode("utf-8"),
            topic=topic,
            offset=offset.decode(),
            ts=int(values[b"t"]),
            data=decode_data(values.get(b"k", JSON_KIND), values[b"d"]),
        )
    except (KeyError, ValueError, BadPayload):  # UnicodeDecodeError is a ValueError
        return None
