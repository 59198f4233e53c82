"""RedisPresence against a real Redis (127.0.0.1:6379, or HUB_TEST_REDIS_URL).

Every test uses its own key prefix and deletes its keys afterwards; the Redis is
shared. A missing Redis fails the test, naming it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from hub.backends import redis_client
from hub.backends.base import BackendUnavailable, Connection
from hub.backends.redis_presence import RedisPresence, count_users
from hub.presence_client import online_many_async
from tests.services import missing
from tests.tcp_proxy import proxied, via

REDIS_URL = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TTL = 2
TIMEOUT = 0.5  # backend_timeout of the presence that goes through a proxy

Events = list[tuple[str, str, bool]]


def _missing(service: str, why: object) -> None:
    missing(f"{service} is not reachable ({why}); start it or set HUB_TEST_REDIS_URL")


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        _missing(f"Redis at {REDIS_URL}", exc)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: aioredis.Redis) -> AsyncIterator[str]:
    prefix = f"test-presence:{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis.scan_iter(match=prefix + "*", count=500)]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
def events() -> Events:
    return []


@pytest.fixture
async def make(
    redis: aioredis.Redis, prefix: str, events: Events
) -> AsyncIterator[Callable[..., Awaitable[RedisPresence]]]:
    started: list[RedisPresence] = []

    async def make(replica: str, ttl: int = TTL) -> RedisPresence:
        async def on_transition(user: str, online: bool) -> None:
            events.append((replica, user, online))

        presence = RedisPresence(redis, prefix=prefix, replica=replica, ttl=ttl, on_transition=on_transition)
        await presence.start()
        started.append(presence)
        return presence

    yield make
    for presence in started:
        await presence.close()


async def wait_for(predicate: Callable[[], Awaitable[bool]], limit: float, what: str) -> float:
    """Poll ``predicate`` every 50 ms until true; return the seconds it took, fail after ``limit``."""
    start = time.monotonic()
    deadline = start + limit
    while time.monotonic() < deadline:
        if await predicate():
            return time.monotonic() - start
        await asyncio.sleep(0.05)  # polling interval, not synchronisation
    pytest.fail(f"expected {what} within {limit} s")


def polled(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """``check`` as the async predicate ``wait_for`` polls."""

    async def predicate() -> bool:
        return check()

    return predicate


def conn(user: str, replica: str, n: int = 0) -> Connection:
    return Connection(f"{replica}-{user}-{n}", user, replica)


async def test_counts_across_replicas(make: Callable[..., Awaitable[RedisPresence]]) -> None:
    a, b = await make("a"), await make("b")
    assert await a.add(conn("1", "a")) == 1
    assert await b.add(conn("1", "b")) == 2
    assert await b.add(conn("1", "b", 1)) == 3
    assert await a.add(conn("2", "a")) == 1
    assert await a.count(["1", "2", "3"]) == {"1": 3, "2": 1, "3": 0}
    assert await b.count(["1", "2", "3"]) == {"1": 3, "2": 1, "3": 0}
    assert await a.replicas() == {"a": 2, "b": 2}
    assert await b.remove(conn("1", "b")) == 2
    assert await b.remove(conn("1", "b")) == 2  # idempotent
    assert await a.remove(conn("2", "a")) == 0
    assert await a.count(["1", "2"]) == {"1": 2, "2": 0}
    assert await online_many_async(a._redis, a._prefix, ["1", "2"]) == {"1": True, "2": False}


async def test_one_transition_each_way(make: Callable[..., Awaitable[RedisPresence]], events: Events) -> None:
    a, b = await make("a"), await make("b")
    await a.add(conn("7", "a"))
    await b.add(conn("7", "b"))
    await a.add(conn("7", "a", 1))
    assert [(u, o) for _, u, o in events] == [("7", True)]
    await a.remove(conn("7", "a"))
    await b.remove(conn("7", "b"))
    assert [(u, o) for _, u, o in events] == [("7", True)]
    await a.remove(conn("7", "a", 1))
    await a.remove(conn("7", "a", 1))
    assert [(u, o) for _, u, o in events] == [("7", True), ("7", False)]
    await b.add(conn("7", "b", 2))  # back online: a new, single online event
    assert [(u, o) for _, u, o in events][-1] == ("7", True)
    assert len(events) == 3


async def test_concurrent_adds_fire_once(make: Callable[..., Awaitable[RedisPresence]], events: Events) -> None:
    replicas = [await make(f"r{i}") for i in range(3)]
    await asyncio.gather(*(p.add(conn("9", p.replica, n)) for p in replicas for n in range(5)))
    assert [(u, o) for _, u, o in events] == [("9", True)]
    await asyncio.gather(*(p.remove(conn("9", p.replica, n)) for p in replicas for n in range(5)))
    assert [(u, o) for _, u, o in events] == [("9", True), ("9", False)]


async def test_silent_replica_vanishes_within_one_ttl(
    make: Callable[..., Awaitable[RedisPresence]], events: Events
) -> None:
    a, c = await make("a"), await make("c")  # two survivors race to reap
    dead = await make("dead")
    await dead.add(conn("only-dead", "dead"))
    await dead.add(conn("both", "dead"))
    await a.add(conn("both", "a"))
    assert await a.count(["only-dead", "both"]) == {"only-dead": 1, "both": 2}
    # Stop the heartbeat without the clean-up close does: what kill -9 leaves behind.
    assert dead._task is not None
    dead._stopping.set()
    await dead._task
    dead._task = None
    stopped = time.monotonic()

    async def gone() -> bool:
        return (await a.count(["only-dead"]))["only-dead"] == 0

    async def offline_fired() -> bool:
        return ("only-dead", False) in [(u, o) for _, u, o in events]

    # Deadlines generous for a busy machine: how soon (about one TTL) is a figure, printed.
    await wait_for(gone, 3 * TTL + 10, "the dead replica's connections to stop counting")
    await wait_for(offline_fired, 3 * TTL + 10, "the offline event of the dead replica's user")
    print(f"offline event {time.monotonic() - stopped:.2f} s after the heartbeat stopped (TTL {TTL})")
    assert await a.count(["both"]) == {"both": 1}
    assert "dead" not in await c.replicas()
    # Exactly once across the two reapers, and nothing for the user still online elsewhere.
    await a.sweep()
    await c.sweep()
    offline = [(r, u) for r, u, o in events if not o]
    assert [u for _, u in offline] == ["only-dead"]
    assert offline[0][0] in ("a", "c")


async def test_killed_process_vanishes_within_one_ttl(
    redis: aioredis.Redis, prefix: str, make: Callable[..., Awaitable[RedisPresence]], events: Events
) -> None:
    """A real process holding presence is killed with SIGKILL; a survivor reaps it."""
    survivor = await make("survivor")
    code = (
        "import asyncio, sys\n"
        "import redis.asyncio as r\n"
        "from hub.backends.base import Connection\n"
        "from hub.backends.redis_presence import RedisPresence\n"
        "async def main():\n"
        f"    p = RedisPresence(r.Redis.from_url({REDIS_URL!r}), prefix={prefix!r}, replica='victim', ttl={TTL})\n"
        "    await p.start()\n"
        "    await p.add(Connection('c1', 'victim-user', 'victim'))\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        os.sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(15):
            line = await proc.stdout.readline()
        assert line.strip() == b"ready"
        assert await survivor.count(["victim-user"]) == {"victim-user": 1}
        proc.kill()
        await proc.wait()
        killed = time.monotonic()

        async def offline() -> bool:
            return ("survivor", "victim-user", False) in events

        await wait_for(offline, 3 * TTL + 10, "the killed replica's user to go offline")
        print(f"offline {time.monotonic() - killed:.2f} s after SIGKILL (TTL {TTL})")
        assert await survivor.count(["victim-user"]) == {"victim-user": 0}
        assert [e for e in events if e[1] == "victim-user"] == [("survivor", "victim-user", False)]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_restart_with_same_id_forgets_the_old_process(
    make: Callable[..., Awaitable[RedisPresence]], events: Events
) -> None:
    first = await make("x")
    await first.add(conn("5", "x"))
    first._stopping.set()  # crash: no clean-up
    assert first._task is not None
    await first._task
    first._task = None
    again = await make("x")  # restarted at once, before the lease ran out
    assert await again.count(["5"]) == {"5": 0}
    assert [(u, o) for _, u, o in events] == [("5", True), ("5", False)]


async def test_reaped_while_alive_registers_again(
    redis: aioredis.Redis, make: Callable[..., Awaitable[RedisPresence]], events: Events
) -> None:
    a, stalled = await make("a"), await make("stalled")
    await stalled.add(conn("8", "stalled"))
    # Simulate a stall longer than the lease: another replica reaps it.
    await redis.zadd(stalled._replicas_key, {"stalled": 0})
    await a.sweep()
    assert await a.count(["8"]) == {"8": 0}

    async def back() -> bool:
        return (await a.count(["8"]))["8"] == 1

    await wait_for(back, 3 * TTL + 10, "the stalled replica to register its connection again")
    assert [(u, o) for _, u, o in events] == [("8", True), ("8", False), ("8", True)]


async def test_close_removes_this_replica(make: Callable[..., Awaitable[RedisPresence]], events: Events) -> None:
    a, b = await make("a"), await make("b")
    await b.add(conn("3", "b"))
    await b.add(conn("4", "b"))
    await a.add(conn("4", "a"))
    await b.close()
    assert await a.count(["3", "4"]) == {"3": 0, "4": 1}
    assert await a.replicas() == {"a": 1}
    assert sorted((u, o) for _, u, o in events if not o) == [("3", False)]


async def test_blocking_client(make: Callable[..., Awaitable[RedisPresence]], prefix: str) -> None:
    from hub.presence_client import connections_many, is_online, online_many

    a = await make("a")
    await a.add(conn("11", "a"))
    counts = await asyncio.to_thread(connections_many, ["11", "12"], url=REDIS_URL, prefix=prefix)
    assert counts == {"11": 1, "12": 0}
    assert await asyncio.to_thread(online_many, ["11", "12"], url=REDIS_URL, prefix=prefix) == {"11": True, "12": False}
    assert await asyncio.to_thread(is_online, "12", url=REDIS_URL, prefix=prefix) is False


async def test_publisher_presence_queries(make: Callable[..., Awaitable[RedisPresence]], prefix: str) -> None:
    from hub.publisher import Publisher

    a = await make("a")
    await a.add(conn("21", "a"))
    publisher = Publisher("amqp://unused/", redis_url=REDIS_URL, redis_prefix=prefix)  # no AMQP needed for presence
    try:
        assert await publisher.online_many(["21", "22"]) == {"21": True, "22": False}
        assert await publisher.is_online("21") is True
    finally:
        await publisher.close()
    with pytest.raises(ValueError, match="redis_url"):
        await Publisher("amqp://unused/").is_online("21")


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_connections_closed_while_redis_is_away_stop_counting(
    redis: aioredis.Redis, prefix: str, events: Events, fault: str
) -> None:
    """No phantom presence: a socket closed while Redis is unreachable (refused or stalled)
    stops counting once Redis is back, and so does one whose ``add`` timed out but lands late."""
    async with proxied(REDIS_URL, 6379) as proxy:
        client = redis_client.connect(via(REDIS_URL, proxy.port), TIMEOUT)

        async def on_transition(user: str, online: bool) -> None:
            events.append(("away", user, online))

        presence = RedisPresence(
            client, prefix=prefix, replica="away", ttl=TTL, on_transition=on_transition, timeout=TIMEOUT
        )
        await presence.start()
        try:
            closed, late, staying = conn("p1", "away"), conn("p2", "away"), conn("p3", "away")
            assert await presence.add(closed) == 1
            assert await presence.add(staying) == 1
            proxy.cut() if fault == "cut" else proxy.stall()
            with pytest.raises(BackendUnavailable):
                await presence.add(late)  # stalled: the command waits in the proxy and lands on restore
            assert await presence.remove(late) is None  # never raises into the session's clean-up
            assert await presence.remove(closed) is None
            assert presence.reconciling
            proxy.restore()

            async def gone() -> bool:
                return await count_users(redis, prefix, ["p1", "p2", "p3"]) == {"p1": 0, "p2": 0, "p3": 1}

            await wait_for(gone, 5 * TTL, "the connections closed during the outage to stop counting")
            await wait_for(polled(lambda: not presence.reconciling), 5 * TTL, "the reconciliation to end")
            assert await count_users(redis, prefix, ["p1", "p2", "p3"]) == {"p1": 0, "p2": 0, "p3": 1}
            assert ("away", "p1", False) in events
            assert ("away", "p3", False) not in events
        finally:
            await presence.close()
            await client.aclose()
