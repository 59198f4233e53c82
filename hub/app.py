"""The ASGI application: ``/ws`` sessions, the HTTP API, health, metrics and the demo."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hub.backends.base import BackendUnavailable
from hub.node import Node
from hub.protocol import choose_codec
from hub.session import Receive, Scope, Send, Session
from hub.settings import Settings
from hub.topics import InvalidTopic, user_topic, validate_topic, validate_user_id

MAX_PUBLISH_BODY = 1_048_576
MAX_BULK_USERS = 1000
STATIC = Path(__file__).parent / "static"


class HubApp:
    """Routes ``/ws`` upgrades straight to sessions (the hot path skips the router) and
    everything else to a Starlette app."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.http = _starlette(node)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
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
        await Session(node, codec, codec.name if offered else None, receive, send).run()


def create_app(settings: Settings | None = None, node: Node | None = None) -> HubApp:
    """The hub's ASGI app for ``settings`` (default: from the environment)."""
    if node is None:
        node = Node(settings if settings is not None else Settings.from_env())
    return HubApp(node)


def _starlette(node: Node) -> Starlette:
    settings = node.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.close()

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        assert settings.api_key is not None
        return scheme.lower() == "bearer" and secrets.compare_digest(key.encode(), settings.api_key.encode())

    async def publish(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "expected 'Authorization: Bearer <HUB_API_KEY>'")
        return await _publish(node, request)

    async def presence(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "expected 'Authorization: Bearer <HUB_API_KEY>'")
        return await _presence_one(node, request.path_params["user"])

    async def presence_many(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "expected 'Authorization: Bearer <HUB_API_KEY>'")
        users = [u for part in request.query_params.getlist("user") for u in part.split(",") if u]
        if not users or len(users) > MAX_BULK_USERS:
            return _error(400, f"expected 1 to {MAX_BULK_USERS} users as ?user=1&user=2 or ?user=1,2")
        try:
            for user in users:
                validate_user_id(user)
        except InvalidTopic as exc:
            return _error(400, str(exc))
        try:
            counts = await node.backend.presence.count(users)
        except BackendUnavailable as exc:
            return _error(503, f"presence is unavailable, try again: {exc}")
        return JSONResponse({"users": {u: {"online": c > 0, "connections": c} for u, c in counts.items()}})

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
        Route("/api/publish", publish, methods=["POST"]),
        Route("/api/presence", presence_many, methods=["GET"]),
        Route("/api/presence/{user}", presence, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if settings.demo_enabled:
        routes += _demo_routes(node)
    return Starlette(routes=routes, lifespan=lifespan)


def _demo_routes(node: Node) -> list[Any]:
    """Token minting and publishing without an API key: for the demo page, never production."""

    async def token(request: Request) -> Response:
        try:
            user = validate_user_id(request.query_params.get("user", ""))
        except InvalidTopic as exc:
            return _error(400, str(exc))
        return JSONResponse({"token": node.auth.mint(user, ttl=3600)})

    async def publish(request: Request) -> Response:
        return await _publish(node, request)

    async def presence(request: Request) -> Response:
        return await _presence_one(node, request.path_params["user"])

    routes: list[Any] = [
        Route("/demo/token", token, methods=["GET"]),
        Route("/demo/publish", publish, methods=["POST"]),
        Route("/demo/presence/{user}", presence, methods=["GET"]),
    ]
    demo_dir = STATIC / "demo"
    if demo_dir.is_dir():
        routes.append(Mount("/demo", StaticFiles(directory=demo_dir, html=True), name="demo"))
    return routes


async def _publish(node: Node, request: Request) -> Response:
    """``POST {"user"|"topic", "data", "id"?, "ttl"?}`` → ``{"id", "offset"}``."""
    body = await request.body()
    if len(body) > MAX_PUBLISH_BODY:
        return _error(413, f"expected a body of at most {MAX_PUBLISH_BODY} bytes, got {len(body)}")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        return _error(400, f"expected a JSON body, got unreadable JSON ({exc})")
    if not isinstance(payload, dict):
        return _error(400, f"expected a JSON object, got {type(payload).__name__}")
    if ("user" in payload) == ("topic" in payload):
        return _error(400, "expected exactly one of 'user' or 'topic'")
    if "data" not in payload:
        return _error(400, "expected a 'data' field (any JSON value)")
    message_id = payload.get("id")
    if message_id is not None and (not isinstance(message_id, str) or not 0 < len(message_id) <= 128):
        return _error(400, "expected 'id' to be a string of 1 to 128 characters")
    ttl = payload.get("ttl")
    if ttl is not None and (not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0):
        return _error(400, "expected 'ttl' to be a positive number of seconds")
    try:
        topic = user_topic(payload["user"]) if "user" in payload else validate_topic(payload["topic"])
    except InvalidTopic as exc:
        return _error(400, str(exc))
    try:
        receipt = await node.publish(topic, payload["data"], message_id=message_id, ttl=ttl, source="http")
    except BackendUnavailable as exc:
        return _error(503, f"not accepted, try again: {exc}")
    answer: dict[str, Any] = {"id": receipt.id, "topic": topic, "offset": receipt.offset}
    if receipt.duplicate:
        answer["duplicate"] = True
    return JSONResponse(answer)


async def _presence_one(node: Node, user: str) -> Response:
    try:
        validate_user_id(user)
    except InvalidTopic as exc:
        return _error(400, str(exc))
    try:
        count = (await node.backend.presence.count([user]))[user]
    except BackendUnavailable as exc:
        return _error(503, f"presence is unavailable, try again: {exc}")
    return JSONResponse({"user": user, "online": count > 0, "connections": count})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
