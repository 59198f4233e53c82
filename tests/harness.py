"""Test harness: real hub servers on free loopback ports and a real WebSocket client.

``BACKENDS`` maps a backend name to a factory of the environment that selects it;
``run_hub`` starts a replica in-process (uvicorn in the test's event loop) on that
backend. The contract suite is parametrized over ``BACKENDS``, so a backend that
registers itself here runs every contract test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hub.node import Node
from hub.server import build_server
from hub.settings import Settings

SECRET = "test-secret-that-is-long-enough-for-hs256"
API_KEY = "test-api-key"
TIMEOUT = 10.0

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


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_token(user: str, *, ttl: float = 300, topics: list[str] | None = None, secret: str = SECRET) -> str:
    """An HS256 token as a backend would mint it."""
    claims: dict[str, Any] = {"sub": user, "exp": int(time.time() + ttl)}
    if topics is not None:
        claims["topics"] = topics
    return jwt.encode(claims, secret, algorithm="HS256")


async def wait_for(predicate: Callable[[], Any], *, timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Closed:
    """How a socket ended: the close code, its reason and the ``error`` frame before it."""

    code: int | None
    reason: str
    error: dict[str, Any] | None


@dataclass
class Client:
    """A test WebSocket client speaking protocol v1 (JSON or msgpack)."""

    ws: ClientConnection
    binary: bool
    connected: dict[str, Any] = field(default_factory=dict)
    answer_pings: bool = True
    pings: int = 0

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(msgpack.packb(frame) if self.binary else json.dumps(frame))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame other than ``ping`` (pings are answered with ``pong`` unless disabled)."""
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            if self.binary:
                assert isinstance(raw, bytes), f"expected a binary frame, got {raw!r:.60}"
                frame: dict[str, Any] = msgpack.unpackb(raw)
            else:
                assert isinstance(raw, str), f"expected a text frame, got {raw!r:.60}"
                frame = json.loads(raw)
            if frame.get("type") == "ping":
                self.pings += 1
                if self.answer_pings:
                    await self.send({"type": "pong"})
                    continue
            return frame

    async def notifications(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Exactly the next ``count`` notification frames."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            try:
                frame = await self.recv(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                got = [f.get("data") for f in found]
                raise AssertionError(
                    f"expected {count} notifications within {timeout:g} s, got {len(found)}: {got}"
                ) from None
            assert frame["type"] == "notification", f"expected a notification, got {frame}"
            found.append(frame)
        return found

    async def expect_silence(self, seconds: float = 0.3) -> None:
        """Assert that no frame (other than pings) arrives for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            frame = await self.recv(seconds)
            raise AssertionError(f"expected no frame, got {frame}")

    async def closed(self, timeout: float = TIMEOUT) -> Closed:
        """Read until the hub closes the socket; return the close and the error frame before it."""
        error = None
        try:
            while True:
                frame = await self.recv(timeout)
                if frame.get("type") == "error":
                    error = frame
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            return Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "", error)

    async def close(self) -> None:
        await self.ws.close()


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
        return make_token(user, **kwargs)

    async def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An HTTP request with the API key (unless ``headers`` replaces it)."""
        headers = {"Authorization": f"Bearer {API_KEY}", **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def publish(self, user: str | None = None, data: Any = None, **fields: Any) -> dict[str, Any]:
        """Publish over the HTTP API; returns the answer (``id``, ``offset``)."""
        body = {"data": data, **fields}
        if user is not None:
            body["user"] = user
        response = await self.api("POST", "/api/publish", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def open(self, subprotocol: str | None = None, **kwargs: Any) -> ClientConnection:
        """A raw upgraded socket (no connect frame sent)."""
        protocols = [subprotocol] if subprotocol else None
        # An unbounded client queue: a test that leaves frames unread must still see the close.
        return await connect(
            self.ws_url,
            subprotocols=protocols,
            open_timeout=TIMEOUT,
            max_queue=None,
            **kwargs,  # type: ignore[arg-type]
        )

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
    """Start a replica on ``backend`` with the test secret and API key; stop it afterwards."""
    async with BACKENDS[backend]() as backend_env:
        environ = {"HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY, **backend_env, **(env or {})}
        port = free_port()
        settings = Settings.from_env(environ, port=port, **overrides)
        node = Node(settings)
        server = build_server(node)
        task = asyncio.create_task(server.serve())
        try:
            await wait_for(lambda: server.started or task.done(), what="the hub to start")
            if task.done():
                task.result()
                raise AssertionError("the hub stopped during start-up")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as http:
                yield RunningHub(settings, node, port, backend, http)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)


@register_backend("distributed", history=True)
@contextlib.asynccontextmanager
async def _distributed() -> AsyncIterator[dict[str, str]]:
    from tests.distributed_env import environment

    async with environment(history=True) as env:
        yield env


@register_backend("distributed-nohistory", history=False)
@contextlib.asynccontextmanager
async def _distributed_nohistory() -> AsyncIterator[dict[str, str]]:
    from tests.distributed_env import environment

    async with environment(history=False) as env:
        yield env
