"""Waiting for a condition with a deadline: the only way tests synchronise with a hub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

#: Default deadline, in seconds, of every wait in the test clients and ``wait_for``.
TIMEOUT = 10.0
#: How often ``wait_for`` polls.
POLL_INTERVAL = 0.02


async def wait_for(predicate: Callable[[], Any], *, timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync, or returning an awaitable) until its value is truthy; return it.

    Raises AssertionError naming ``what`` when ``timeout`` seconds pass first. The deadline
    is generous on purpose: it bounds a hang, it is not a timing goal.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value) or asyncio.isfuture(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)  # polling interval, not synchronisation
