"""docker/: the image and the compose stack, built and run for real.

A private dockerd (tests/docker_engine.py) builds the hub image from docker/Dockerfile
and runs it twice:

- one container on the host network against this machine's RabbitMQ and Redis (a
  private vhost and Redis prefix, as tests/distributed_env.py gives every test);
- the whole stack of docker/compose.yaml, driven by docker-compose 1.29 with
  docker/compose.lowfd.yaml (this machine's open-files limit is below HAProxy's 200000):
  every service healthy, a notification through the load balancer, a replica stopped with
  ``docker stop`` closes its sockets with 1012 and its clients resume on another replica,
  then ``down -v``.

RabbitMQ, Redis, HAProxy and the Python base image are STAND-INS built from Debian
packages (docker/standins/), because no registry can be reached here; compose.yaml and
the Dockerfile still name the official images. Layers are cached between runs in the
engine's data root, so only the first run builds (see docker/README.md for timings).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.distributed_env import environment
from tests.docker_engine import ROOT, DockerError, Engine, Project, build_standins, engine
from tests.harness import free_port, make_token, wait_for

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(1200)]

IMAGE = "notification-hub:latest"
COMPOSE_FILES = [
    ROOT / "docker" / "compose.yaml",
    ROOT / "docker" / "compose.lowfd.yaml",
    ROOT / "tests" / "compose.test.yaml",
]
SERVICES = ["hub1", "hub2", "hub3", "lb", "rabbitmq", "redis"]
DRAIN_SECONDS = 2
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def docker() -> Iterator[Engine]:
    """The private engine with the stand-ins and the hub image built (cached after the first run)."""
    with engine() as running:
        build_standins(running)
        # As docker/README.md builds it alone (BuildKit reads docker/Dockerfile.dockerignore).
        running.run(
            running.env["DOCKER"], "build", "-q", "-f", "docker/Dockerfile", "-t", IMAGE, ".",
            env={"DOCKER_BUILDKIT": "1"}, timeout=900,
        )  # fmt: skip
        yield running


class Socket:
    """One protocol-v1 JSON socket (answers pings)."""

    def __init__(self, ws: ClientConnection, connected: dict[str, Any]) -> None:
        self.ws = ws
        self.connected = connected
        self.replica: str = connected["replica"]

    @classmethod
    async def open(cls, url: str, token: str, since: dict[str, str] | None = None) -> Socket:
        ws = await connect(url, subprotocols=["hub.v1.json"], open_timeout=TIMEOUT)
        frame: dict[str, Any] = {"type": "connect", "token": token}
        if since:
            frame["since"] = since
        await ws.send(json.dumps(frame))
        connected = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert connected["type"] == "connected", connected
        return cls(ws, connected)

    async def next(self) -> dict[str, Any]:
        """The next frame other than ``ping``."""
        while True:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            if frame["type"] != "ping":
                return frame
            await self.ws.send(json.dumps({"type": "pong"}))

    async def close_code(self) -> int | None:
        """Read until the hub closes the socket; its close code."""
        try:
            while True:
                await self.next()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


async def test_image_runs_against_the_machines_services(docker: Engine) -> None:
    config = json.loads(docker.docker("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["hub"]
    secret, key, port = secrets.token_hex(32), secrets.token_hex(24), free_port()
    async with environment() as backend:
        env = {**backend, "HUB_HOST": "127.0.0.1", "HUB_PORT": str(port), "HUB_JWT_SECRET": secret, "HUB_API_KEY": key}
        name = f"hubtest-single-{os.getpid()}"
        args = ["run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
        args += ["--health-interval", "2s"]  # the image's HEALTHCHECK, run more often
        for variable, value in env.items():
            args += ["-e", f"{variable}={value}"]
        docker.docker(*args, IMAGE)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                await _wait(lambda: _ready(http), 60, "the container's /readyz", lambda: _logs(docker, name))
                client = await Socket.open(f"ws://127.0.0.1:{port}/ws", make_token("42", secret=secret))
                answer = await http.post(
                    "/api/publish", json={"user": "42", "data": {"text": "from a container"}},
                    headers={"Authorization": f"Bearer {key}"},
                )  # fmt: skip
                assert answer.status_code == 200, answer.text
                frame = await client.next()
                assert frame["type"] == "notification", frame
                assert frame["data"] == {"text": "from a container"}
                assert client.connected["replica"] == f"{_hostname(docker, name)}:{port}"
                await client.ws.close()
            await wait_for(lambda: docker.health(name) == "healthy", timeout=60, what="the image's HEALTHCHECK")
        finally:
            docker.docker("rm", "-f", name, check=False)


async def _wait(predicate: Callable[[], Any], timeout: float, what: str, diagnose: Callable[[], str]) -> None:
    """``wait_for``, with what ``diagnose`` says at the deadline in the failure."""
    try:
        await wait_for(predicate, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose()}") from None


async def _ready(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


def _logs(docker: Engine, container: str) -> str:
    result = docker.docker("logs", "--tail", "30", container, check=False)
    return (result.stdout + result.stderr)[-2000:]


def _hostname(docker: Engine, container: str) -> str:
    return docker.docker("inspect", "-f", "{{.Config.Hostname}}", container).stdout.strip()


@pytest.fixture
async def stack(docker: Engine) -> AsyncIterator[tuple[Project, dict[str, str]]]:
    """docker/compose.yaml up (``up -d --build``, as docker/README.md says), ``down -v`` after."""
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    ports = {
        "HUB_PUBLIC_PORT": str(free_port()),
        "HUB_STATS_PORT": str(free_port()),
        "RABBITMQ_MANAGEMENT_PORT": str(free_port()),
        "RABBITMQ_METRICS_PORT": str(free_port()),
    }
    env = {
        **ports,
        "HUB_JWT_SECRET": secrets.token_hex(32),
        "HUB_API_KEY": secrets.token_hex(24),
        "RABBITMQ_PASSWORD": secrets.token_hex(12),
        "HUB_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "HUB_LB_NOFILE": str(min(hard_limit, 65536)),
    }
    project = Project(f"hubtest{os.getpid()}", COMPOSE_FILES, env)
    try:
        docker.compose(project, "up", "-d", "--build", timeout=900)
        await _wait(
            lambda: _all_healthy(docker, project), 240, "every service healthy", lambda: _status(docker, project)
        )
        # Docker's "healthy" is each replica's own /readyz; HAProxy's checks (rise 2) follow shortly.
        stats = f"http://127.0.0.1:{env['HUB_STATS_PORT']}/stats;csv"
        await _wait(lambda: _lb_servers_up(stats), 30, "HAProxy to see hub1-3 UP", lambda: _status(docker, project))
        yield project, env
    finally:
        logs = docker.compose(project, "logs", "--no-color", "--tail", "40", check=False).stdout
        down = docker.compose(project, "down", "-v", "--timeout", "30", check=False)
        left = docker.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project.name}").stdout
        volumes = docker.docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project.name}")
        assert down.returncode == 0, down.stderr + logs
        assert not left.split(), f"containers left after down -v: {left}"
        assert not volumes.stdout.split(), f"volumes left after down -v: {volumes.stdout}"


async def _lb_servers_up(stats_url: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            rows = (await http.get(stats_url)).text.splitlines()
        except httpx.TransportError:
            return False
    up = {row.split(",")[1] for row in rows if row.startswith("hubs,hub") and ",UP," in row}
    return up == {"hub1", "hub2", "hub3"}


def _containers(docker: Engine, project: Project) -> dict[str, str]:
    """service → container id."""
    return {s: docker.compose(project, "ps", "-q", s).stdout.strip() for s in SERVICES}


def _all_healthy(docker: Engine, project: Project) -> bool:
    containers = _containers(docker, project)
    return all(cid and docker.health(cid) == "healthy" for cid in containers.values())


def _status(docker: Engine, project: Project) -> str:
    try:
        return docker.compose(project, "ps", timeout=30).stdout
    except DockerError as exc:
        return str(exc)


async def test_compose_stack(docker: Engine, stack: tuple[Project, dict[str, str]]) -> None:
    project, env = stack
    containers = _containers(docker, project)
    base = f"127.0.0.1:{env['HUB_PUBLIC_PORT']}"
    api = httpx.AsyncClient(
        base_url=f"http://{base}", headers={"Authorization": f"Bearer {env['HUB_API_KEY']}"}, timeout=10
    )
    async with api:
        # What the operator looks at: HAProxy's and RabbitMQ's metrics, RabbitMQ's management API.
        assert (await api.get(f"http://127.0.0.1:{env['HUB_STATS_PORT']}/metrics")).status_code == 200
        assert (await api.get(f"http://127.0.0.1:{env['RABBITMQ_METRICS_PORT']}/metrics")).status_code == 200
        overview = await api.get(
            f"http://127.0.0.1:{env['RABBITMQ_MANAGEMENT_PORT']}/api/overview", auth=("hub", env["RABBITMQ_PASSWORD"])
        )
        assert overview.status_code == 200, overview.text

        # Six sockets through the load balancer: leastconn spreads them over the replicas.
        token = make_token("42", secret=env["HUB_JWT_SECRET"], ttl=600)
        sockets = [await Socket.open(f"ws://{base}/ws", token) for _ in range(6)]
        replicas = {s.replica for s in sockets}
        assert replicas <= {"hub1", "hub2", "hub3"}
        assert len(replicas) >= 2, f"expected the load balancer to spread sockets, got {replicas}"

        first = await api.post("/api/publish", json={"user": "42", "data": "before"})
        assert first.status_code == 200, first.text
        received = [await s.next() for s in sockets]
        assert [f["data"] for f in received] == ["before"] * 6, received
        offset: str = received[0]["offset"]

        # docker stop: SIGTERM, the replica drains (1012 to each of its sockets), exits 0.
        victim = max(replicas, key=lambda r: sum(s.replica == r for s in sockets))
        drained = [s for s in sockets if s.replica == victim]
        survivors = [s for s in sockets if s.replica != victim]
        stopping = asyncio.create_task(asyncio.to_thread(docker.docker, "stop", "-t", "30", containers[victim]))
        codes = await asyncio.gather(*(s.close_code() for s in drained))
        await stopping
        assert codes == [1012] * len(drained), codes
        assert docker.docker("inspect", "-f", "{{.State.ExitCode}}", containers[victim]).stdout.strip() == "0"

        # The others keep their sockets; a drained client resumes through the LB on another replica.
        second = await api.post("/api/publish", json={"user": "42", "data": "after"})
        assert second.status_code == 200, second.text
        for s in survivors:
            frame = await s.next()
            assert frame["data"] == "after", frame
        resumed = await Socket.open(f"ws://{base}/ws", token, since={"user.42": offset})
        assert resumed.replica != victim
        assert resumed.connected["recovered"] is True
        frame = await resumed.next()
        assert (frame["type"], frame["data"]) == ("notification", "after"), frame
        for s in [*survivors, resumed]:
            await s.ws.close()
