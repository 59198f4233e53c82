"""Is the client still there, and within its limits in time? (docs/protocol.md §3, §8)

One ``Liveness`` per open connection, driven by one timer handle (not a task: a replica
holds tens of thousands of sockets):

- a ``ping`` every ``ping_interval`` seconds;
- the silence watchdog: a client that sent nothing at all (not even ``pong``) for two
  intervals is closed with 1001. The hub's own stalls do not count against the client: a
  check that runs late (the event loop was busy or paused) subtracts its lateness, since
  a pong that came meanwhile is still unread behind it. Otherwise one pause of the hub
  would close every socket at once and bring them all back as a reconnect storm;
- the token's expiry: 4009 at ``exp`` unless a ``refresh`` moved it;
- the frame rate: a token bucket of ``rate`` frames per second with a burst of
  ``2 * rate`` (4008 above it, decided by the caller from ``heard``).

It decides and asks; the session acts (``ping`` writes through the transport, ``close``
ends the session).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from hub.codes import CloseCode
from hub.protocol import Wire


class Liveness:
    """The timing rules of one connection; ``start`` once it is open, ``stop`` when it closes."""

    __slots__ = (
        "_allowance",
        "_close",
        "_due",
        "_exp",
        "_interval",
        "_last_frame",
        "_last_heard",
        "_next_ping",
        "_ping",
        "_ping_frame",
        "_rate",
        "_timer",
    )

    def __init__(
        self,
        *,
        interval: float,
        rate: float,
        ping: Callable[[Wire], None],
        ping_frame: Wire,
        close: Callable[[CloseCode, str], None],
    ) -> None:
        self._interval = interval
        self._rate = rate
        self._ping = ping
        self._ping_frame = ping_frame
        self._close = close
        self._allowance = 2 * rate
        self._last_frame = self._last_heard = time.monotonic()
        self._next_ping = 0.0
        self._exp = 0.0
        self._due = 0.0  # when the armed check should run (monotonic)
        self._timer: asyncio.TimerHandle | None = None

    def heard(self) -> bool:
        """A frame came from the client: it is alive. False when it exceeds the frame rate."""
        now = self._last_heard = time.monotonic()
        burst = 2 * self._rate
        self._allowance = min(burst, self._allowance + (now - self._last_frame) * self._rate)
        self._last_frame = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    def start(self, exp: float) -> None:
        """Begin pinging and watching; the token expires at ``exp`` (seconds since the epoch)."""
        self._exp = exp
        self._next_ping = time.monotonic() + self._interval
        self._arm()

    def renew(self, exp: float) -> None:
        """A refreshed token: it now expires at ``exp``."""
        self._exp = exp
        if self._timer is not None:
            self._timer.cancel()
            self._arm()

    def stop(self) -> None:
        """No more pings or checks; idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        now = time.monotonic()
        wait = max(min(self._next_ping - now, self._exp - time.time()), 0.0)
        self._due = now + wait
        self._timer = asyncio.get_running_loop().call_later(wait, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._exp - time.time() <= 0:
            self._close(CloseCode.TOKEN_EXPIRED, "the token expired; send 'refresh' before 'exp'")
            return
        now = time.monotonic()
        late = max(0.0, now - self._due)  # the hub was not listening either
        if now >= self._next_ping:
            if now - self._last_heard - late > 2 * self._interval:
                self._close(CloseCode.GOING_AWAY, f"heard nothing for {2 * self._interval:g} s")
                return
            self._next_ping = now + self._interval
            self._ping(self._ping_frame)
        self._arm()
