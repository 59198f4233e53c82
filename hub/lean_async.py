"""An event and a queue for the objects a replica keeps per socket.

``asyncio.Event`` allocates a ``collections.deque`` for its waiters up front, and
``asyncio.Queue`` four (getters, putters, items and its ``join`` event's waiters). An
empty deque is 760 bytes on CPython 3.11, so a socket's queue and its two events came to
4.5 KB of a 24 KB socket (tracemalloc, 2,000 idle sockets). These keep what a socket
needs, with room for it only once something waits:

- ``LeanEvent``: ``asyncio.Event``'s ``set``, ``clear``, ``is_set`` and ``wait``.
- ``LeanQueue``: an unbounded FIFO with ``asyncio.Queue``'s ``put_nowait``,
  ``get_nowait``, ``get``, ``empty`` and ``qsize``; for short queues (a list: taking
  the head moves the rest), such as uvicorn's receive queue, which pauses reading
  whenever it holds a message.

Both are used from one event loop; neither is thread-safe (neither is asyncio's).
"""

from __future__ import annotations

import asyncio
from typing import Generic, Literal, TypeVar

T = TypeVar("T")


class LeanEvent:
    """``asyncio.Event`` without its eager waiters deque."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter; a ``wait`` from now on returns at once."""
        if self._flag:
            return
        self._flag = True
        waiters = self._waiters
        if waiters:  # kept once made: a socket's pump waits on its event again and again
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            waiters.clear()

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> Literal[True]:
        """Return once the flag is set (at once if it is)."""
        if self._flag:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        waiters = self._waiters
        waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if waiter in waiters:  # cancelled before ``set``: ``set`` emptied the list otherwise
                waiters.remove(waiter)


class LeanQueue(Generic[T]):
    """An unbounded ``asyncio.Queue`` without its eager deques (see the module docstring)."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._getters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        """Append ``item`` and wake the longest-waiting ``get``."""
        self._items.append(item)
        self._wake_one()

    def get_nowait(self) -> T:
        """The oldest item; ``asyncio.QueueEmpty`` when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> T:
        """The oldest item, waiting for one. A ``get`` cancelled after it was woken passes
        its turn to the next waiter, so no item is left with a waiter asleep (as asyncio's)."""
        while not self._items:
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()  # a no-op when it was woken: then its turn goes to the next
                if getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_one()
                raise
        return self._items.pop(0)

    def _wake_one(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return
