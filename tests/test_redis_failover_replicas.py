"""Three hub replicas behind HAProxy while the Redis primary fails over (issue 13, "Prove").

The rig of tests/test_cluster.py (``docker/cluster.py``: 3 ``hub serve`` processes behind
the real HAProxy config) on the shared RabbitMQ (a private vhost) and a private Redis:
(a) a Sentinel set-up (``testkit.redis_sentinel``) whose primary is killed (SIGKILL) with
its replication link stalled first, so the promoted replica has lost the newest history
entries for certain; (b) a Redis Cluster (``testkit.redis_cluster``) whose primary holding
the most users' streams is killed (SIGKILL). A publisher posts to ``/api/publish`` through
the LB steadily (a failed request is retried with the same id). Three users' clients go
away before the stall (Sentinel) or the kill (Cluster) and come back once the new primary
serves, with ``since`` from before what the failover may lose; every other client's socket
is dropped at the kill, so it reconnects through the LB during or after the failover.
Checked per user, on the exact list of ids: none duplicated, in order, the notifications
published after every client was back all arrive (live delivery goes on), and every
missing one falls at a reconnect whose ``connected.recovered`` was false — never a silent
gap (docs/protocol.md §5). Figures are printed (``-s``); the deadlines only bound a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from testkit import services
from testkit.reconnecting import ReconnectingClient
from testkit.redis_cluster import RedisClusterSetup
from testkit.redis_sentinel import RedisSentinelSetup
from tests.services import missing
from tests.tcp_proxy import TcpProxy
from tests.test_cluster import LIMIT, RATE, Deployment, Publisher, cluster, start_clients, wait_until

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(150)]

USERS = [f"r{n}" for n in range(9)]


@contextlib.asynccontextmanager
async def replicas(redis_env: dict[str, str]) -> AsyncIterator[Deployment]:
    """3 hub processes behind HAProxy on a private vhost and the Redis of ``redis_env``."""
    if cluster.find_haproxy() is None:
        missing("haproxy is not installed (apt-get install -y haproxy)")
    async with services.deployment() as env:
        env = {**env, **redis_env, "HUB_DRAIN_SECONDS": "1", "HUB_LOG_LEVEL": "warning"}
        async with cluster.Cluster(3, env) as running:
            yield Deployment(running, env)


def gaps(sent: list[str], client: ReconnectingClient) -> tuple[list[str], list[str]]:
    """(silent gaps, told gaps) of one user's list: a run of ids missing between two received
    ones (or before the first, after the last) is told when a reconnect between them said
    ``recovered: false``, silent otherwise. Raises if an id is duplicated or out of order."""
    position = {id: n for n, id in enumerate(sent)}
    seen = [position[id] for id in client.ids()]
    assert seen == sorted(set(seen)), f"{client.user}: duplicated or out of order: {seen}"
    silent: list[str] = []
    told: list[str] = []
    previous, session = -1, 1
    for at, now in [*zip(seen, client.sessions, strict=True), (len(sent), len(client.connects))]:
        if at > previous + 1:
            between = [c.get("recovered") for c in client.connects[session:now]]
            gap = f"{client.user}: ids {previous + 1}..{at - 1} missing, reconnects between said {between}"
            (told if False in between else silent).append(gap)
        previous, session = at, now
    return silent, told


async def run_failover(
    d: Deployment,
    what: str,
    kill: Callable[[], None],
    settle: Callable[[], object],
    away: list[str],
    prepare: Callable[[Publisher], Awaitable[None]] | None = None,
) -> None:
    """Publish steadily to clients on 3 replicas; the ``away`` users' clients go away,
    ``prepare`` (given the publisher), ``kill`` the Redis primary, drop every other client's
    socket, ``settle`` (blocking: until promoted), the away ones come back; then check the
    lists (see the module docstring) and print figures."""
    clients = await start_clients(d, USERS)
    publisher = Publisher(d, USERS)
    hold = asyncio.Event()
    try:
        publisher.start()
        await wait_until(lambda: _true(publisher.total >= RATE), LIMIT, "publishing to start")
        await asyncio.gather(*(clients[u].drop(hold) for u in away))
        if prepare is not None:
            await prepare(publisher)
        before = {u: len(c.connects) for u, c in clients.items()}
        sent_before = publisher.total
        started = time.monotonic()
        await asyncio.to_thread(kill)
        await asyncio.gather(*(c.drop() for u, c in clients.items() if u not in away))
        await asyncio.to_thread(settle)
        promoted = time.monotonic() - started
        hold.set()

        async def back() -> bool:
            return all(len(c.connects) > before[u] and c.connected.is_set() for u, c in clients.items())

        await wait_until(back, 3 * LIMIT, "every client to reconnect through the LB")
        mark = {u: len(publisher.sent[u]) for u in USERS}  # published once every client is back

        async def flowing() -> bool:
            return all(
                len(publisher.sent[u]) > mark[u] and publisher.sent[u][mark[u]] in c.ids() for u, c in clients.items()
            )

        await wait_until(flowing, 3 * LIMIT, "live delivery after the failover")
        recover = time.monotonic() - started
        await asyncio.sleep(2.0)  # keep publishing after recovery (a duration, not synchronisation)
        await publisher.stop()

        async def tails() -> bool:
            return all(publisher.sent[u][-1] in c.ids() for u, c in clients.items())

        await wait_until(tails, 3 * LIMIT, "every user's last notification")
        silent: list[str] = []
        told: list[str] = []
        for user, client in clients.items():
            assert set(publisher.sent[user][mark[user] :]) <= set(client.ids()), f"{user}: live delivery stopped"
            s, t = gaps(publisher.sent[user], client)
            silent += s
            told += t
        lost = sum(len(set(publisher.sent[u]) - set(c.ids())) for u, c in clients.items())
        duplicated = sum(len(c.ids()) - len(set(c.ids())) for c in clients.values())
        said = [frame.get("recovered") for u, c in clients.items() for frame in c.connects[before[u] :]]
        print(
            f"\n{what}: clients {len(clients)} on 3 replicas ({len(away)} away across the failover), "
            f"notifications {publisher.total} "
            f"({sent_before} before the kill), lost {lost} (in {len(told)} gaps told recovered: false, "
            f"{len(silent)} silent), duplicated {duplicated}, reconnects after the kill {len(said)} "
            f"(recovered false {said.count(False)}, true {said.count(True)}), publish retries "
            f"{publisher.retries}, promoted {promoted:.2f} s, time to recover {recover:.2f} s"
        )
        assert silent == [], silent
        assert duplicated == 0
    finally:
        hold.set()
        for c in clients.values():
            await c.stop()
        if publisher._task is not None and not publisher._task.done():
            await publisher.stop()


async def test_sentinel_primary_killed_behind_the_load_balancer() -> None:
    redis = RedisSentinelSetup()
    link = await TcpProxy("127.0.0.1", redis.data[0].port).start()  # the replica's replication link
    try:
        await asyncio.to_thread(redis.start, link.port)
        async with replicas(redis.env()) as d:
            new = redis.replica

            async def stall(publisher: Publisher) -> None:
                # the replica gets nothing more while every user gets notifications: the promotion loses them
                link.stall()
                count = {u: len(v) for u, v in publisher.sent.items()}
                await wait_until(
                    lambda: _true(all(len(publisher.sent[u]) > count[u] for u in USERS)),
                    LIMIT,
                    "a notification per user while replication is stalled",
                )

            await run_failover(
                d,
                "Sentinel primary killed (replication stalled first)",
                lambda: redis.primary.kill(),
                lambda: redis.wait_promoted(new),
                USERS[:3],
                prepare=stall,
            )
    finally:
        await asyncio.to_thread(redis.close)
        await link.close()


async def test_cluster_primary_killed_behind_the_load_balancer() -> None:
    redis = await asyncio.to_thread(RedisClusterSetup().start)
    try:
        on: dict[int, list[str]] = {}
        for user in USERS:
            slot = int(redis.servers[0].cli("CLUSTER", "KEYSLOT", f"{{user.{user}}}"))
            on.setdefault(redis.primary_of(slot).port, []).append(user)
        victim = redis.server(max(on, key=lambda port: len(on[port])))
        async with replicas({"HUB_REDIS_URL": redis.url}) as d:
            await run_failover(
                d,
                f"Redis Cluster primary killed, holding users {on[victim.port]}",
                victim.kill,
                redis.wait_healthy,
                on[victim.port][:3],
            )
    finally:
        await asyncio.to_thread(redis.close)


async def _true(value: bool) -> bool:
    return value
