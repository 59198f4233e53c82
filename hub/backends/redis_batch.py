"""What many connects ask of Redis at the same moment, sent as one pipeline (docs/protocol.md §5, §6).

A connect storm asks Redis for the same few things thousands of times a second: a
presence ``add`` (a script), the history's latest offsets (``XREVRANGE``), a presence
``remove`` when sockets drop. One command per connect each holding a pooled connection
for a round trip made a burst of 5,000 connects queue for the pool until some gave up
(1013). ``RedisBatch`` gathers the calls issued in one loop turn and sends them as one
non-transactional pipeline on one pooled connection: one write, one read, one round trip
for the lot.

Nothing about the calls changes: the same scripts (by their SHA, loaded on a NOSCRIPT
answer and retried alone), the same keys and arguments, each call's own answer or error.
A non-transactional pipeline is what Redis Cluster clients split by slot, so this keeps
working on a cluster client. Callers keep their own deadlines: a call whose caller gave
up before its batch was sent is left out of it; one already sent runs (as a plain
command cut short by a deadline may) and its answer is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from hub.backends.redis_client import RedisClient

log = logging.getLogger("hub.redis")

#: Calls per pipeline: a larger turn is split (one pipeline's reply is read in one go).
MAX_BATCH = 256
#: Pipelines in flight at once per client; calls wait in the next batch meanwhile.
MAX_IN_FLIGHT = 4

Key = str | bytes
Arg = str | bytes | int | float

_batches: weakref.WeakKeyDictionary[RedisClient, RedisBatch] = weakref.WeakKeyDictionary()


def batch_for(redis: RedisClient, timeout: float) -> RedisBatch:
    """The one ``RedisBatch`` of ``redis`` (shared by presence and history, so their calls of a
    loop turn travel together); ``timeout`` bounds each pipeline (``settings.backend_timeout``)."""
    batch = _batches.get(redis)
    if batch is None:
        batch = _batches[redis] = RedisBatch(redis, timeout)
    return batch


class _Call:
    __slots__ = ("args", "future", "script")

    def __init__(self, future: asyncio.Future[Any], script: AsyncScript | None, args: tuple[Any, ...]) -> None:
        self.future = future
        self.script = script
        self.args = args  # the command, or (keys, args) of a script


class RedisBatch:
    """Coalesces the commands and script calls of one loop turn into one pipeline.

    ``command`` and ``script`` return the call's own answer (parsed as redis-py parses
    that command), or raise its own error: a RedisError, or OSError/TimeoutError when the
    pipeline failed as a whole (every call of it then raises).
    """

    def __init__(self, redis: RedisClient, timeout: float) -> None:
        self._redis = redis
        self._timeout = timeout
        self._pending: list[_Call] = []
        self._scheduled = False
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.pipelines = 0  # sent so far
        self.calls = 0  # carried so far

    async def command(self, *args: Arg) -> Any:
        """Run one command (``"XREVRANGE", key, "+", "-", "COUNT", 1``) in the next batch."""
        return await self._enqueue(None, args)

    async def script(self, script: AsyncScript, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
        """Run a registered script (``redis.register_script``) in the next batch."""
        return await self._enqueue(script, (tuple(keys), tuple(args)))

    def _enqueue(self, script: AsyncScript | None, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(future, script, args))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)  # after every call of this loop turn is queued
        return future

    def _flush(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._pending and self._in_flight < MAX_IN_FLIGHT:
            calls = [c for c in self._pending[:MAX_BATCH] if not c.future.done()]
            del self._pending[:MAX_BATCH]
            if not calls:
                continue
            self._in_flight += 1
            task = loop.create_task(self._send(calls))
            self._tasks.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                results = await self._pipeline(calls)
                for call, result in zip(calls, results, strict=True):
                    if isinstance(result, NoScriptError) and call.script is not None:
                        result = await self._retry(call)  # a Redis restarted or flushed its scripts
                    _settle(call.future, result)
        except BaseException as exc:  # the whole pipeline failed: every call of it says so
            for call in calls:
                _settle(call.future, exc if isinstance(exc, Exception) else ConnectionError("batch cancelled"))
            if not isinstance(exc, Exception):
                raise

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        self.pipelines += 1
        self.calls += len(calls)
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in calls:
                if call.script is None:
                    pipe.execute_command(*call.args)
                else:
                    keys, args = call.args
                    pipe.execute_command("EVALSHA", call.script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            return results

    async def _retry(self, call: _Call) -> Any:
        keys, args = call.args
        assert call.script is not None
        try:
            return await call.script(keys=list(keys), args=list(args))  # loads the script first
        except Exception as exc:
            return exc

    async def close(self) -> None:
        """Wait for the pipelines in flight (the calls still pending are sent by them)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():
        return  # its caller gave up (deadline): the answer is dropped
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
