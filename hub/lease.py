"""What an open connection holds in the backend: its presence entry and its live subscription
(docs/protocol.md §5, §6), taken and given back within ``backend_timeout``.

A sick Redis or RabbitMQ must cost a connecting client a quick 1013, never a hang, and
must leave nothing behind: no presence entry for a socket that never opened (a phantom
that pushes its user towards the 4008 cap), no queue that nobody consumes. So:

- presence ``add`` and ``subscribe`` run side by side (one round trip) under one deadline;
- an ``add`` still running at the deadline is cancelled; the removal that always follows
  (``release``) undoes it if it took effect anyway;
- a ``subscribe`` still running at the deadline is not cancelled (a broker exchange cut
  half-way may leave a queue and its consumer behind): it is left to finish, and what
  it returns is closed at once;
- when one of the two fails, the other's subscription is closed before the error is
  raised: ``acquire`` gives a subscription or nothing;
- ``release`` closes the subscription and removes the presence entry, each within the
  deadline; a failure is logged, never raised (the backends retry what they must).

A burst of connects (a reconnect storm) is admitted in turns (``Turns``): a few at a time
take what they need of the backend, the others wait (cheaply) for a turn. Without that,
thousands of set-ups share the CPU at once, each runs slower than its deadline, and the
whole burst times out together (1013 all round) instead of being served at full speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Sequence

from hub.backends.base import Backend, BackendUnavailable, Connection, Subscription

log = logging.getLogger("hub.lease")

#: Clean-ups of subscriptions that arrived after their deadline (kept referenced until done).
_late: set[asyncio.Task[None]] = set()


class BackendTimeout(BackendUnavailable):
    """A backend call on a connection's path missed ``backend_timeout``; the message is fit for the client."""


class Turns:
    """At most ``size`` connects set up at once (``settings.connect_concurrency``); the others
    wait for a turn, first come first served, at most ``wait`` seconds, then BackendTimeout."""

    def __init__(self, size: int, wait: float) -> None:
        self._free = asyncio.Semaphore(size)
        self._wait = wait
        self.size = size

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._wait):
                await self._free.acquire()
        except TimeoutError:
            raise BackendTimeout(f"the hub is busy: no turn to connect within {self._wait:g} s") from None
        try:
            yield
        finally:
            self._free.release()


_turns: weakref.WeakKeyDictionary[Backend, Turns] = weakref.WeakKeyDictionary()


def turns(backend: Backend, size: int, wait: float) -> Turns:
    """The ``Turns`` of ``backend`` (one per backend: per replica), made on first use."""
    found = _turns.get(backend)
    if found is None:
        found = _turns[backend] = Turns(size, wait)
    return found


async def acquire(backend: Backend, conn: Connection, topics: Sequence[str], limit: float) -> tuple[int, Subscription]:
    """Add ``conn`` to presence and subscribe to ``topics``; return the user's connection count
    (including ``conn``) and the subscription, which the caller must ``release``.

    Raises BackendTimeout after ``limit`` seconds, or the backend's own error; either
    way no subscription is left open. The caller must ``release`` ``conn`` even then.
    """
    adding = asyncio.ensure_future(backend.presence.add(conn))
    subscribing = asyncio.ensure_future(backend.broker.subscribe(topics))
    try:
        await asyncio.wait((adding, subscribing), timeout=limit)
    finally:  # also when the caller is cancelled
        if not adding.done():
            adding.cancel()
        if not subscribing.done():
            subscribing.add_done_callback(functools.partial(_close_late, limit=limit))
    subscription = _result(subscribing)
    # Every error is read (an unread one is logged as "never retrieved"); the broker's first.
    errors = [t.exception() for t in (subscribing, adding) if t.done() and not t.cancelled()]
    try:
        pending = [name for name, task in (("presence", adding), ("the broker", subscribing)) if not task.done()]
        if pending:
            raise BackendTimeout(f"{' and '.join(pending)} did not answer within {limit:g} s")
        for error in errors:
            if error is not None:
                raise error
        return adding.result(), subscribing.result()
    except BaseException:
        if subscription is not None:
            await _bounded(subscription.close(), limit, "closing a subscription")
        raise


async def release(backend: Backend, subscription: Subscription | None, conn: Connection | None, limit: float) -> None:
    """Close ``subscription`` and remove ``conn`` from presence (those given), each within ``limit``."""
    if subscription is not None:
        await _bounded(subscription.close(), limit, "closing a subscription")
    if conn is not None:
        await _bounded(backend.presence.remove(conn), limit, f"removing connection {conn.conn_id} from presence")


def _result(task: asyncio.Future[Subscription]) -> Subscription | None:
    if task.done() and not task.cancelled() and task.exception() is None:
        return task.result()
    return None


def _close_late(task: asyncio.Future[Subscription], *, limit: float) -> None:
    """A subscribe that finished after its deadline: nobody will consume it, close it now."""
    subscription = _result(task)
    if subscription is None:
        if not task.cancelled():
            log.debug("a late subscribe failed: %r", task.exception())
        return
    cleanup = asyncio.get_running_loop().create_task(
        _bounded(subscription.close(), limit, "closing a late subscription")
    )
    _late.add(cleanup)
    cleanup.add_done_callback(_late.discard)


async def _bounded(step: Awaitable[object], limit: float, what: str) -> None:
    try:
        async with asyncio.timeout(limit):
            await step
    except TimeoutError:
        log.warning("%s did not finish within %g s", what, limit)
    except Exception:
        log.exception("%s failed", what)
