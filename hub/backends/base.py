"""The seams between the session code and the engines behind it.

``Broker`` moves notifications from publishers to sockets, ``History`` keeps each
topic's recent notifications with their offsets for recovery, ``Presence`` counts
who is connected. ``Backend`` bundles one implementation of each with a lifecycle.
The embedded backend (``memory``) implements them in-process; the distributed one
with RabbitMQ and Redis. One contract test suite runs against every implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hub.notification import Notification


class SubscriptionOverflow(Exception):
    """The socket fell behind by more than its bound; it must be closed (1013) and recover."""


class SubscriptionGap(Exception):
    """Live messages may have been missed (the broker connection was lost and restored).

    The subscription is usable again; the caller back-fills from history after the
    last offset it delivered per topic, then calls ``receive`` again.
    """


class BackendUnavailable(Exception):
    """The broker or store cannot take the request now; the caller may retry later.

    Raised when a call on a request path did not finish within ``backend_timeout`` or
    met a broken connection; the session closes with 1013, the HTTP API answers 503.
    The message names the service (and its URL without password at start-up).
    """


class SubscriptionLost(BackendUnavailable):
    """A live subscription could not be restored after a broker interruption.

    Raised by ``receive`` once the restore was retried until its deadline: the socket
    must be closed (1013) and reconnect with ``since``; it is never left open and silent.
    """


#: Takes one live notification where it arrives, instead of ``Subscription.receive`` returning
#: it: True when it took it (hub/delivery.py writes it to the socket then and there).
Direct = Callable[[Notification], bool]


class Subscription(Protocol):
    """Live notifications for one socket's topics, in per-topic order, bounded.

    The caller reads with ``receive``, writes what it got to the socket, then calls
    ``ack``; unacknowledged notifications count against the bound.
    """

    async def receive(self, direct: Direct | None = None) -> Sequence[Notification]:
        """Wait for at least one notification and return every one buffered, oldest first.

        While it waits with nothing buffered, each notification that arrives is offered to
        ``direct`` first, in the backend's task: one it takes (True) is never returned;
        from the first one it declines, they are buffered and returned as before. So
        ``direct`` sees notifications only while its caller waits here, in order with what
        ``receive`` returns; it must not block or raise.

        Raises SubscriptionOverflow when the bound was exceeded, SubscriptionGap when
        messages may have been missed but the subscription goes on, SubscriptionLost
        when it could not be restored after an interruption.
        """
        ...

    def ack(self) -> None:
        """Acknowledge every notification returned by ``receive`` so far."""
        ...

    async def close(self) -> None:
        """Stop the subscription and release its queue; idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class Receipt:
    """What publishing a notification produced: its id and, when known, its offset.

    ``offset`` is None when history is off or when sequencing happens later (AMQP).
    ``duplicate`` is True when the id was already in the topic's history.
    """

    id: str
    offset: str | None
    duplicate: bool = False


class Broker(Protocol):
    """Carries notifications from publishers to live subscriptions."""

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> Receipt:
        """Accept a notification for ``topic`` (already validated) and return once it is safe.

        "Safe" means sequenced into history (embedded) or confirmed by the broker
        (AMQP). ``ttl`` (seconds) bounds how long an undelivered message may wait;
        ``priority`` (0-9) lets it overtake a backlog waiting to be sequenced
        (docs/protocol.md §5); where nothing waits it changes nothing.
        """
        ...

    async def subscribe(self, topics: Sequence[str]) -> Subscription:
        """Start receiving live notifications for ``topics`` (already validated).

        Every notification accepted after this returns is delivered to the
        subscription (or it overflows); the caller must ``close`` it.
        """
        ...


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """Notifications after an offset, and whether they are all that was ever published after it.

    ``complete`` is False when entries after the offset were trimmed (count or age).
    ``latest`` is set when the offset is not one this history ever issued: another
    site's (each site sequences for itself, docs/operations.md §7) or a made-up one.
    Nothing after it can be told, so ``notifications`` is empty, ``complete`` False, and
    ``latest`` is this history's latest offset, where delivery resumes instead (the
    foreign offset must never be used to filter: one ahead of this site's would mute
    the socket).
    """

    notifications: Sequence[Notification]
    complete: bool
    latest: str | None = None


def issued_here(
    offset: tuple[int, int], *, last: tuple[int, int], max_deleted: tuple[int, int], is_entry: bool, now: int
) -> bool:
    """Whether a history whose newest issued offset is ``last``, whose deletions reach
    ``max_deleted`` (entries are deleted oldest first, so every issued offset above it is
    still an entry) and which holds ``offset`` iff ``is_entry``, could have issued ``offset``.

    ``0-0`` (nothing seen) is always fine. An offset past ``last`` was never issued; one
    above ``max_deleted`` that is not an entry was never issued either. An offset at or
    below ``max_deleted`` may have been (it is treated as a trimmed one: ``complete``
    False). With no stream at all (``last`` 0-0), only an offset from the future (past
    ``now``) is known to be foreign.
    """
    if offset == (0, 0):
        return True
    if last == (0, 0):
        return offset[0] <= now
    if offset > last:
        return False
    return offset <= max_deleted or is_entry


class History(Protocol):
    """Each topic's recent notifications with their offsets, retained by count and age."""

    async def append(self, topic: str, id: str, ts: int, data: Any) -> tuple[str, bool]:
        """Append a notification; return its offset and whether ``id`` was already present.

        A duplicate is not appended again: its existing offset is returned.
        """
        ...

    async def latest(self, topics: Sequence[str]) -> dict[str, str]:
        """The newest offset of each topic (``0-0`` for a topic with no history)."""
        ...

    async def read(self, after: Mapping[str, str]) -> dict[str, HistoryRead]:
        """Every retained notification of each topic with an offset greater than ``after[topic]``."""
        ...


@dataclass(frozen=True, slots=True)
class ReadState:
    """One user's read state of one topic (docs/protocol.md §9).

    ``up_to``: every notification at or below this offset is read (``0-0``: none);
    ``offsets``: the notifications after it read one by one, retained ones only, oldest
    first; ``unread``: how many retained notifications after ``up_to`` are not in ``offsets``.
    """

    topic: str
    up_to: str
    offsets: tuple[str, ...]
    unread: int


@dataclass(frozen=True, slots=True)
class ReadEntry:
    """A retained notification with whether the user has read it (a page of ``Reads.page``)."""

    notification: Notification
    read: bool


class Reads(Protocol):
    """Per user and topic: a read cursor plus single read marks after it (docs/protocol.md §9).

    Kept as long as the history it refers to: marks at or below the cursor fold into it,
    marks of notifications no longer retained are dropped (never counted either way).
    Topics and users are validated by the caller; offsets are canonical (``str(Offset)``).
    Every call takes at most ``backend_timeout`` and raises BackendUnavailable past it.
    """

    async def unread(self, user: str, topics: Sequence[str]) -> dict[str, int]:
        """The unread count of each topic for ``user``."""
        ...

    async def mark(self, user: str, topic: str, *, up_to: str | None, offsets: Sequence[str]) -> ReadState:
        """Move the cursor to ``up_to`` (never backwards, never past the topic's newest
        offset) and mark ``offsets`` (those that are retained notifications after the
        cursor; others are ignored); then tell every socket of ``user``, on every replica,
        with a ``read`` frame. Returns the state after the change."""
        ...

    async def page(self, user: str, topic: str, *, before: str | None, limit: int) -> list[ReadEntry]:
        """Up to ``limit`` retained notifications of ``topic`` older than ``before`` (None:
        from the newest), newest first, each with its read flag for ``user``."""
        ...


@dataclass(frozen=True, slots=True)
class Connection:
    """One socket as presence sees it."""

    conn_id: str
    user: str
    replica: str


class Presence(Protocol):
    """Who is connected, across every replica of the deployment."""

    async def add(self, conn: Connection) -> int:
        """Record a connection; return the user's connection count including it."""
        ...

    async def remove(self, conn: Connection) -> int | None:
        """Forget a connection (idempotent); return the user's remaining connection count.

        Never raises for an unreachable store: the removal is kept and retried in the
        background until it succeeds (a closed socket must not stay counted), and the
        count is None because it is unknown.
        """
        ...

    async def count(self, users: Sequence[str]) -> dict[str, int]:
        """The number of live connections of each user (0 when offline)."""
        ...


class Backend(Protocol):
    """One implementation of each seam, started and stopped together."""

    @property
    def name(self) -> str:
        """Short name for logs and ``/readyz``."""
        ...

    @property
    def broker(self) -> Broker: ...

    @property
    def history(self) -> History | None:
        """None when history is off (``HUB_HISTORY_SIZE=0``)."""
        ...

    @property
    def presence(self) -> Presence: ...

    @property
    def reads(self) -> Reads | None:
        """Read state (docs/protocol.md §9); None when history is off (nothing to read)."""
        ...

    async def start(self) -> None:
        """Connect and declare what is needed; raise if the engines cannot be reached."""
        ...

    async def close(self) -> None:
        """Stop background work and release connections; idempotent."""
        ...

    async def check(self) -> dict[str, str | None]:
        """Health of each engine: name → None when healthy, else what is wrong."""
        ...

    def stats(self) -> dict[str, Any]:
        """Cumulative counters for ``/metrics`` (names in ``hub.metrics.BACKEND_COUNTERS``)."""
        ...
