"""``BlockingPublisher``: the publish helper for sync code (Django, Flask, scripts).

It runs a ``Publisher`` (``hubnotify.publisher``) on an event loop in a daemon thread of
its own; every call blocks until that call is done there.

    with BlockingPublisher("amqp://guest:guest@localhost/") as pub:
        pub.publish(42, {"text": "hello"})
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

from hubnotify.message import EXCHANGE
from hubnotify.presence import DEFAULT_PREFIX
from hubnotify.publisher import DEFAULT_TIMEOUT, Publisher, PublisherSettings, amqp_url, keywords

T = TypeVar("T")

#: Seconds ``BlockingPublisher`` waits past ``timeout`` before it cancels a call itself.
_BACKSTOP_GRACE: Final = 5.0


class BlockingPublisher:
    """``Publisher`` for sync code: calls block until the broker confirmed.

    A daemon thread runs the event loop; the instance is safe to share between threads.
    Each call ends within ``timeout`` seconds (then TimeoutError, see ``Publisher``). Call
    ``close`` (or use ``with``) to stop the connection and the thread; a constructor that
    fails (RabbitMQ unreachable) stops them itself.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = EXCHANGE,
        persistent: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
        redis_url: str | None = None,
        redis_prefix: str = DEFAULT_PREFIX,
        ssl_context: ssl.SSLContext | None = None,
        redis_tls: Mapping[str, Any] | None = None,
        mandatory: bool = True,
        hub_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self._timeout = timeout
        self._publisher = Publisher(
            url,
            exchange=exchange,
            persistent=persistent,
            timeout=timeout,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            ssl_context=ssl_context,
            redis_tls=redis_tls,
            mandatory=mandatory,
            hub_url=hub_url,
            api_key=api_key,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="hubnotify-publisher", daemon=True)
        self._thread.start()
        try:
            self._call(self._publisher.connect())
        except BaseException:
            self._stop()
            raise

    @classmethod
    def from_settings(
        cls, settings: PublisherSettings, *, persistent: bool = True, timeout: float | None = None
    ) -> BlockingPublisher:
        """See ``Publisher.from_settings``; ``timeout`` defaults to ``HUB_BACKEND_TIMEOUT``."""
        options = keywords(settings)
        if timeout is not None:
            options["timeout"] = timeout
        return cls(amqp_url(settings), **options, persistent=persistent)

    def publish(
        self,
        user: str | int,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> str:
        """See ``Publisher.publish``."""
        return self._call(self._publisher.publish(user, data, message_id=message_id, ttl=ttl, priority=priority))

    def publish_topic(
        self,
        topic: str,
        data: Any,
        *,
        message_id: str | None = None,
        ttl: float | None = None,
        priority: int | None = None,
    ) -> str:
        """See ``Publisher.publish_topic``."""
        return self._call(self._publisher.publish_topic(topic, data, message_id=message_id, ttl=ttl, priority=priority))

    def publish_many(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """See ``Publisher.publish_many``."""
        return self._call(self._publisher.publish_many(list(items)))

    def online_many(self, users: Iterable[str | int]) -> dict[str, bool]:
        """See ``Publisher.online_many``."""
        return self._call(self._publisher.online_many(list(users)))

    def is_online(self, user: str | int) -> bool:
        """See ``Publisher.is_online``."""
        return self._call(self._publisher.is_online(user))

    def unread(self, users: Iterable[str | int], topics: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """See ``Publisher.unread``."""
        return self._call(self._publisher.unread(list(users), topics))

    def notifications(
        self, user: str | int, *, topic: str | None = None, before: str | None = None, limit: int = 50
    ) -> dict[str, Any]:
        """See ``Publisher.notifications``."""
        return self._call(self._publisher.notifications(user, topic=topic, before=before, limit=limit))

    def mark_read(
        self, user: str | int, *, topic: str | None = None, up_to: str | None = None, offsets: Sequence[str] = ()
    ) -> dict[str, Any]:
        """See ``Publisher.mark_read``."""
        return self._call(self._publisher.mark_read(user, topic=topic, up_to=up_to, offsets=offsets))

    def close(self) -> None:
        """Close the connection and stop the thread; idempotent."""
        if self._thread.is_alive():
            try:
                self._call(self._publisher.close())
            finally:
                self._stop()

    def __enter__(self) -> BlockingPublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the thread's loop and wait for it. The ``Publisher``'s own
        deadlines end it first (and clean up after themselves); this wait is the backstop."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(None if self._timeout is None else self._timeout + _BACKSTOP_GRACE)
        except TimeoutError:
            future.cancel()  # the coroutine stops too, instead of running on unobserved
            raise

    def _run(self) -> None:
        """The thread: the loop until ``_stop``, then what ``asyncio.run`` does on the way out
        (cancel what is left, e.g. aio-pika's callbacks, and wait for it), so nothing is
        left to run on a closed loop."""
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout)
