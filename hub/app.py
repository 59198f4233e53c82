"""The ASGI application: ``/ws`` sessions, the HTTP API, health, metrics and the demo."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hub import read_api
from hub.backends.base import BackendUnavailable
from hub.http_api import HttpError, guarded, parse_publish, read_body
from hub.node import Node
from hub.protocol import choose_codec
from hub.session import Receive, Scope, Send, Session
from hub.settings import Settings
from hub.sse_routes import SseGateway
from hub.startup import start_node
from hub.topics import InvalidTopic, validate_user_id

MAX_BULK_USERS = 1000
STATIC = Path(__file__).parent / "static"


class HubApp:
    """Routes ``/ws`` upgrades straight to sessions (the hot path skips the router) and
    everything else to a Starlette app."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sse = SseGateway(node, lambda: node.started and not node.draining)
        self.http = _starlette(node, self.sse)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/sse" and scope["method"] == "GET":
            await self.sse.stream(scope, receive, send)  # docs/protocol.md §10
        else:
            await self.http(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        message = await receive()
        if message["type"] != "websocket.connect":
            raise RuntimeError(f"expected ASGI 'websocket.connect', got {message['type']!r}")
        if scope["path"] != "/ws" or node.draining or not node.started:
            await send({"type": "websocket.close", "code": 1000})  # refused upgrade: HTTP 403
            return
        origins = node.settings.allowed_origins
        if origins:
            origin = dict(scope["headers"]).get(b"origin", b"").decode("latin-1")
            if origin not in origins:
                await send({"type": "websocket.close", "code": 1008})
                return
        offered: list[str] = list(scope.get("subprotocols") or [])
        codec = choose_codec(offered)
        if codec is None:
            await send({"type": "websocket.close", "code": 1002})
            return
        send_now = scope.get("extensions", {}).get("hub.send_now")  # hub/server.py's server has it
        await Session(node, codec, codec.name if offered else None, receive, send, send_now=send_now).run()


def create_app(settings: Settings | None = None, node: Node | None = None) -> HubApp:
    """The hub's ASGI app for ``settings`` (default: from the environment)."""
    if node is None:
        node = Node(settings if settings is not None else Settings.from_env())
    return HubApp(node)


def _starlette(node: Node, sse: SseGateway) -> Starlette:
    settings = node.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not node.started:  # ``hub serve`` starts it before uvicorn, to fail with one line
            await start_node(node)
        await sse.start()
        try:
            yield
        finally:
            await sse.close()
            await node.close()

    def require_key(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        assert settings.api_key is not None
        if scheme.lower() != "bearer" or not secrets.compare_digest(key.encode(), settings.api_key.encode()):
            raise HttpError(401, "expected 'Authorization: Bearer <HUB_API_KEY>'")

    async def publish(request: Request) -> Response:
        require_key(request)
        return await _publish(node, request)

    async def presence(request: Request) -> Response:
        require_key(request)
        return await _presence_one(node, request.path_params["user"])

    async def presence_many(request: Request) -> Response:
        require_key(request)
        users = [u for part in request.query_params.getlist("user") for u in part.split(",") if u]
        if not users or len(users) > MAX_BULK_USERS:
            raise HttpError(400, f"expected 1 to {MAX_BULK_USERS} users as ?user=1&user=2 or ?user=1,2")
        try:
            for user in users:
                validate_user_id(user)
        except InvalidTopic as exc:
            raise HttpError(400, str(exc)) from None
        try:
            counts = await node.backend.presence.count(users)
        except BackendUnavailable as exc:
            raise HttpError(503, f"presence is unavailable, try again: {exc}") from None
        return JSONResponse({"users": {u: {"online": c > 0, "connections": c} for u, c in counts.items()}})

    async def unread(request: Request) -> Response:
        require_key(request)
        return await read_api.unread(node.backend.reads, request)

    async def notifications(request: Request) -> Response:
        require_key(request)
        return await read_api.page(node.backend.reads, request)

    async def mark_read(request: Request) -> Response:
        require_key(request)
        return await read_api.mark(node.backend.reads, request)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "replica": settings.replica_id})

    async def readyz(request: Request) -> Response:
        checks = await node.ready()
        ok = all(problem is None for problem in checks.values())
        body = {"ready": ok, "replica": settings.replica_id, "backend": node.backend.name, "checks": checks}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(node.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    routes: list[Any] = [
        Route("/api/publish", guarded(publish), methods=["POST"]),
        Route("/api/presence", guarded(presence_many), methods=["GET"]),
        Route("/api/presence/{user}", guarded(presence), methods=["GET"]),
        Route("/api/unread", guarded(unread), methods=["GET"]),
        Route("/api/notifications/{user}", guarded(notifications), methods=["GET"]),
        Route("/api/read", guarded(mark_read), methods=["POST"]),
        Route("/healthz", guarded(healthz), methods=["GET"]),
        Route("/readyz", guarded(readyz), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
        *sse.routes(),
    ]
    if settings.demo_enabled:
        routes += _demo_routes(node)
    return Starlette(routes=routes, lifespan=lifespan)


def _demo_routes(node: Node) -> list[Any]:
    """Token minting and publishing without an API key: for the demo page, never production.

    On only while the hub runs on development credentials, or with ``HUB_DEMO=1``
    (``Settings.demo_enabled``).
    """

    async def token(request: Request) -> Response:
        try:
            user = validate_user_id(request.query_params.get("user", ""))
        except InvalidTopic as exc:
            raise HttpError(400, str(exc)) from None
        return JSONResponse({"token": node.auth.mint(user, ttl=3600)})

    async def publish(request: Request) -> Response:
        return await _publish(node, request)

    async def presence(request: Request) -> Response:
        return await _presence_one(node, request.path_params["user"])

    routes: list[Any] = [
        Route("/demo/token", guarded(token), methods=["GET"]),
        Route("/demo/publish", guarded(publish), methods=["POST"]),
        Route("/demo/presence/{user}", guarded(presence), methods=["GET"]),
    ]
    demo_dir = STATIC / "demo"
    if demo_dir.is_dir():
        routes.append(Mount("/demo", StaticFiles(directory=demo_dir, html=True), name="demo"))
    return routes


async def _publish(node: Node, request: Request) -> Response:
    """``POST {"user"|"topic", "data", "id"?, "ttl"?, "priority"?}`` → ``{"id", "topic", "offset"}``
    (docs/protocol.md §8)."""
    publish = parse_publish(await read_body(request))
    try:
        receipt = await node.publish(
            publish.topic,
            publish.data,
            message_id=publish.message_id,
            ttl=publish.ttl,
            priority=publish.priority,
            source="http",
        )
    except BackendUnavailable as exc:
        raise HttpError(503, f"not accepted, try again: {exc}") from None
    answer: dict[str, Any] = {"id": receipt.id, "topic": publish.topic, "offset": receipt.offset}
    if receipt.duplicate:
        answer["duplicate"] = True
    return JSONResponse(answer)


async def _presence_one(node: Node, user: str) -> Response:
    try:
        validate_user_id(user)
    except InvalidTopic as exc:
        raise HttpError(400, str(exc)) from None
    try:
        count = (await node.backend.presence.count([user]))[user]
    except BackendUnavailable as exc:
        raise HttpError(503, f"presence is unavailable, try again: {exc}") from None
    return JSONResponse({"user": user, "online": count > 0, "connections": count})
