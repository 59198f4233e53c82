"""Liveness (hub/liveness.py) on a real event loop, without a server: pings, silence, expiry, rate."""

from __future__ import annotations

import asyncio
import time

from hub.codes import CloseCode
from hub.liveness import Liveness
from tests.harness import wait_for


class Recorder:
    def __init__(self) -> None:
        self.pings = 0
        self.closes: list[tuple[CloseCode, str]] = []

    def ping(self, frame: str | bytes) -> None:
        assert frame == "ping"
        self.pings += 1

    def close(self, code: CloseCode, message: str) -> None:
        self.closes.append((code, message))


def liveness(recorder: Recorder, interval: float = 0.05, rate: float = 10.0) -> Liveness:
    return Liveness(interval=interval, rate=rate, ping=recorder.ping, ping_frame="ping", close=recorder.close)


async def test_pings_every_interval_while_the_client_talks() -> None:
    seen = Recorder()
    alive = liveness(seen)
    alive.start(time.time() + 60)
    for _ in range(20):  # the client answers (any frame counts)
        await asyncio.sleep(0.02)
        alive.heard()
    alive.stop()
    assert seen.pings >= 3
    assert seen.closes == []


async def test_silence_for_two_intervals_is_1001() -> None:
    seen = Recorder()
    liveness(seen).start(time.time() + 60)
    await wait_for(lambda: seen.closes, what="the watchdog")
    assert seen.closes == [(CloseCode.GOING_AWAY, "heard nothing for 0.1 s")]
    assert seen.pings >= 1  # it was pinged before it was given up


async def test_a_stall_of_the_hub_is_not_counted_as_the_clients_silence() -> None:
    """The loop stalls for four intervals right after the client was heard; its answer is read
    only after the overdue check ran (as a pong held back by the stall is): no 1001."""
    seen = Recorder()
    alive = liveness(seen)
    alive.start(time.time() + 60)
    alive.heard()
    time.sleep(0.2)  # noqa: ASYNC251 - the hub's loop stalls, on purpose: the check falls due meanwhile
    await asyncio.sleep(0.001)  # the overdue check runs before this wake-up
    alive.heard()  # the pong the stall held back
    await asyncio.sleep(0.02)
    alive.stop()
    assert seen.closes == []
    assert seen.pings >= 1  # the overdue check pinged instead


async def test_expiry_is_4009_and_a_renewal_moves_it() -> None:
    seen = Recorder()
    alive = liveness(seen, interval=60)
    alive.start(time.time() + 0.1)
    alive.renew(time.time() + 0.3)
    await asyncio.sleep(0.15)
    assert seen.closes == []  # the old expiry passed: renewed
    await wait_for(lambda: seen.closes, what="the expiry")
    assert seen.closes[0][0] == CloseCode.TOKEN_EXPIRED


async def test_stop_ends_every_check() -> None:
    seen = Recorder()
    alive = liveness(seen)
    alive.start(time.time() + 0.05)
    alive.stop()
    alive.renew(time.time() + 0.05)  # a refresh racing the close does not re-arm it
    await asyncio.sleep(0.2)
    assert seen.closes == []
    assert seen.pings == 0


def test_the_frame_rate_has_a_burst_of_twice_the_rate() -> None:
    alive = liveness(Recorder(), rate=5)
    allowed = [alive.heard() for _ in range(15)]
    assert allowed[:10] == [True] * 10
    assert False in allowed[10:]
