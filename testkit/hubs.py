"""Hub replicas in the test's own event loop, on every registered backend.

``BACKENDS`` maps a backend name to a factory of the HUB_* environment that selects it;
``run_hub`` starts a replica in-process (uvicorn in the caller's event loop) on a free
loopback port. The contract suite is parametrized over ``BACKENDS``, so a backend that
registers itself here runs every contract test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from hub.node import Node
from hub.server import build_server
from hub.settings import Settings
from testkit.client import Client
from testkit.clustered import clustered_environment
from testkit.metrics import sample
from testkit.net import free_port
from testkit.services import environment
from testkit.tokens import API_KEY, SECRET, make_token
from testkit.waiting import TIMEOUT, wait_for

BackendFactory = Callable[[], AbstractAsyncContextManager[dict[str, str]]]
#: name → factory of the HUB_* environment selecting that backend (set-up and tear-down inside).
BACKENDS: dict[str, BackendFactory] = {}
#: names of backends that keep history (recovery tests run only on these).
WITH_HISTORY: set[str] = set()


def register_backend(name: str, *, history: bool) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator: add a backend to the contract suite."""

    def add(factory: BackendFactory) -> BackendFactory:
        BACKENDS[name] = factory
        if history:
            WITH_HISTORY.add(name)
        return factory

    return add


@register_backend("memory", history=True)
@contextlib.asynccontextmanager
async def _memory() -> AsyncIterator[dict[str, str]]:
    yield {}


@register_backend("memory-nohistory", history=False)
@contextlib.asynccontextmanager
async def _memory_nohistory() -> AsyncIterator[dict[str, str]]:
    yield {"HUB_HISTORY_SIZE": "0"}


@register_backend("distributed", history=True)
@contextlib.asynccontextmanager
async def _distributed() -> AsyncIterator[dict[str, str]]:
    async with environment(history=True) as env:
        yield env


@register_backend("distributed-nohistory", history=False)
@contextlib.asynccontextmanager
async def _distributed_nohistory() -> AsyncIterator[dict[str, str]]:
    async with environment(history=False) as env:
        yield env


@register_backend("clustered", history=True)
@contextlib.asynccontextmanager
async def _clustered() -> AsyncIterator[dict[str, str]]:
    """Redis Cluster + a 3-node RabbitMQ cluster + ``HUB_INGEST_SHARDS=4`` (``testkit.clustered``)."""
    async with clustered_environment() as env:
        yield env


@dataclass
class RunningHub:
    """A replica running in this test's event loop."""

    settings: Settings
    node: Node
    port: int
    backend: str
    http: httpx.AsyncClient

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def history(self) -> bool:
        return self.settings.history_enabled

    def token(self, user: str, **kwargs: Any) -> str:
        """A token this hub accepts (``make_token`` with the test secret)."""
        return make_token(user, **kwargs)

    async def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An HTTP request with the API key (unless ``headers`` replaces it)."""
        headers = {"Authorization": f"Bearer {API_KEY}", **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def metrics(self) -> str:
        """The replica's ``/metrics`` text."""
        return (await self.http.get("/metrics")).text

    async def metric(self, name: str) -> float:
        """One sample of ``/metrics`` (``testkit.metrics.sample``: 0 when absent)."""
        return sample(await self.metrics(), name)

    async def publish(self, user: str | None = None, data: Any = None, **fields: Any) -> dict[str, Any]:
        """Publish over the HTTP API, asserting a 200; returns the answer (``id``, ``offset``)."""
        body = {"data": data, **fields}
        if user is not None:
            body["user"] = user
        response = await self.api("POST", "/api/publish", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def open(self, subprotocol: str | None = None, **kwargs: Any) -> ClientConnection:
        """A raw upgraded socket (no connect frame sent); ``kwargs`` go to websockets' ``connect``."""
        protocols = [Subprotocol(subprotocol)] if subprotocol else None
        # An unbounded client queue unless asked otherwise: a test that leaves frames
        # unread must still see the close.
        options: dict[str, Any] = {"open_timeout": TIMEOUT, "max_queue": None, **kwargs}
        return await connect(self.ws_url, subprotocols=protocols, **options)

    async def connect(
        self,
        user: str = "42",
        *,
        since: dict[str, str] | None = None,
        token: str | None = None,
        msgpack_protocol: bool = False,
        expect_connected: bool = True,
    ) -> Client:
        """Open a socket, send ``connect`` and (by default) check the ``connected`` answer."""
        subprotocol = "hub.v1.msgpack" if msgpack_protocol else "hub.v1.json"
        client = Client(await self.open(subprotocol), binary=msgpack_protocol)
        frame: dict[str, Any] = {"type": "connect", "token": token or self.token(user)}
        if since is not None:
            frame["since"] = since
        await client.send(frame)
        if expect_connected:
            client.connected = await client.recv()
            assert client.connected["type"] == "connected", client.connected
        return client


@contextlib.asynccontextmanager
async def run_hub(
    backend: str = "memory", env: dict[str, str] | None = None, **overrides: Any
) -> AsyncIterator[RunningHub]:
    """Start a replica on ``backend`` with the test secret and API key; stop it afterwards.

    ``env`` is laid over the backend's environment (e.g. the names of an existing
    deployment, to start a second replica of it); ``overrides`` are Settings fields.
    """
    async with BACKENDS[backend]() as backend_env:
        environ = {"HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY, **backend_env, **(env or {})}
        port = free_port()
        settings = Settings.from_env(environ, port=port, **overrides)
        node = Node(settings)
        server = build_server(node)
        task = asyncio.create_task(server.serve())
        try:
            await wait_for(
                lambda: server.started or task.done(), timeout=30, what="the hub to start"
            )  # a cluster start on a busy box
            if task.done():
                task.result()
                raise AssertionError("the hub stopped during start-up")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as http:
                yield RunningHub(settings, node, port, backend, http)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)


async def spawn_hub_serve(env: dict[str, str]) -> asyncio.subprocess.Process:
    """``hub serve`` in a child process, over this environment without its ``HUB_*``
    variables, with the test secret and ``env`` laid over; stdout and stderr piped."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        "serve",
        env={**base, "HUB_JWT_SECRET": SECRET, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
