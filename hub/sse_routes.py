"""The SSE endpoints (docs/protocol.md §10): tickets, streams, and client frames by POST.

- ``POST /sse/ticket`` with ``Authorization: Bearer <JWT>`` → ``{"ticket", "expires_in"}``
  (hub/tickets.py); 401/4009-like refusals as 401, a sick backend as 503.
- ``GET /sse?ticket=…`` (``Last-Event-ID`` header, or ``last_event_id`` query for an
  ``EventSource`` that must use a fresh ticket) → a session on an ``SseTransport``
  (hub/sse.py), the same ``Session`` as ``/ws``: same auth, limits, presence and drain.
- ``POST /sse/<stream>`` with ``Authorization: Bearer <secret>`` and one client frame as
  JSON → 202, routed to the stream wherever it lives (hub/sse_relay.py).

Cross-origin pages may use all three (CORS, within ``HUB_ALLOWED_ORIGINS`` when set).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.auth import TokenError
from hub.backends import redis_client
from hub.backends.base import BackendUnavailable
from hub.backends.redis_client import RedisClient
from hub.host import Host
from hub.http_api import Handler, HttpError, guarded, read_body
from hub.protocol import JSON
from hub.session import Session
from hub.sse import SseTransport, parse_event_id
from hub.sse_relay import Relay, Routed, make_handle, split_handle
from hub.tickets import MemoryTickets, RedisTickets, TicketError, Tickets, TicketStore
from hub.tls import redis_ssl_options
from hub.transport import Message, Receive, Scope, Send

_CORS_ALLOW: Final = [
    ("access-control-allow-methods", "GET, POST, OPTIONS"),
    ("access-control-allow-headers", "authorization, content-type, last-event-id"),
    ("access-control-max-age", "600"),
]


class SseGateway:
    """The SSE side of one replica: its ticket store, its relay and its routes."""

    def __init__(self, host: Host, is_open: Callable[[], bool]) -> None:
        """``is_open()`` says whether the replica takes new connections (started, not draining)."""
        self.host = host
        self._is_open = is_open
        settings = host.settings
        self._redis: RedisClient | None = None
        store: TicketStore
        if settings.distributed and settings.redis_url:
            self._redis = redis_client.connect(
                settings.redis_url,
                settings.backend_timeout,
                redis_ssl_options(settings),
                sentinels=settings.sentinel_addresses,
                master=settings.redis_master,
            )
            store = RedisTickets(self._redis, prefix=settings.redis_prefix, timeout=settings.backend_timeout)
        else:
            store = MemoryTickets()
        self.tickets = Tickets(store, settings.sse_ticket_ttl)
        self.relay = Relay(
            settings.replica_id, self._redis, prefix=settings.redis_prefix, timeout=settings.backend_timeout
        )

    async def start(self) -> None:
        """Start the relay's listener (distributed)."""
        await self.relay.start()

    async def close(self) -> None:
        """Stop the relay and let go of Redis."""
        await self.relay.close()
        if self._redis is not None:
            await redis_client.close(self._redis)  # with Sentinels, their connections too

    def routes(self) -> list[Any]:
        """The POST routes, for the replica's Starlette app."""
        return [
            Route("/sse", self._preflight, methods=["OPTIONS"]),  # Last-Event-ID is not CORS-safelisted
            Route("/sse/ticket", guarded(self._cors(self._ticket)), methods=["POST"]),
            Route("/sse/ticket", self._preflight, methods=["OPTIONS"]),
            Route("/sse/{handle}", guarded(self._cors(self._post)), methods=["POST"]),
            Route("/sse/{handle}", self._preflight, methods=["OPTIONS"]),
        ]

    # ------------------------------------------------------------------ the stream

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /sse``: a session over Server-Sent Events, or an HTTP refusal."""
        origin = _origin(scope)
        cors = self._cors_headers(origin)
        if origin and cors is None:
            await _refuse(send, 403, "Origin not allowed", [])
            return
        cors = cors or []
        if not self._is_open():
            await _refuse(send, 503, "replica not accepting connections (draining); reconnect", cors)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        headers = dict(scope["headers"])
        last = headers.get(b"last-event-id", b"").decode("latin-1") or (query.get("last_event_id") or [""])[0]
        try:
            since = parse_event_id(last) if last else {}
            token = await self.tickets.redeem((query.get("ticket") or [""])[0])
        except ValueError as exc:
            await _refuse(send, 400, f"bad Last-Event-ID: {exc}", cors)
            return
        except TicketError as exc:
            await _refuse(send, exc.status, exc.message, cors)
            return
        except BackendUnavailable as exc:
            await _refuse(send, 503, f"tickets are unavailable, try again: {exc}", cors)
            return
        connect: dict[str, Any] = {"type": "connect", "token": token}
        if since:
            connect["since"] = since
        transports: list[SseTransport] = []

        def channel(send_timeout: float, on_lost: Callable[[], None]) -> SseTransport:
            transport = SseTransport(
                receive,
                _with_headers(send, cors),
                send_timeout=send_timeout,
                on_lost=on_lost,
                connect=JSON.encode(connect),
            )
            transports.append(transport)
            return transport

        session = Session(self.host, JSON, None, receive, send, channel=channel)
        [transport] = transports
        handle = make_handle(session.conn_id, self.relay.replica)
        transport.hello = {
            "stream": handle,
            "post": f"/sse/{handle}",
            "secret": await self.tickets.stream_secret(handle),
        }
        self.relay.streams[session.conn_id] = transport
        try:
            await session.run()
        finally:
            self.relay.streams.pop(session.conn_id, None)

    # ------------------------------------------------------------------ the POSTs

    async def _ticket(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return JSONResponse({"error": "expected 'Authorization: Bearer <token>'", "code": 4001}, status_code=401)
        try:
            self.host.auth.verify(token.strip())
        except TokenError as exc:  # the close code a WebSocket would get, so a client acts alike
            self.host.metrics.auth_failures.labels(code=str(int(exc.code))).inc()
            return JSONResponse({"error": str(exc), "code": int(exc.code)}, status_code=401)
        try:
            ticket, ttl = await self.tickets.issue(token.strip())
        except TicketError as exc:
            raise HttpError(exc.status, exc.message) from None
        return JSONResponse({"ticket": ticket, "expires_in": ttl}, headers={"cache-control": "no-store"})

    async def _post(self, request: Request) -> Response:
        handle = request.path_params["handle"]
        where = split_handle(handle)
        if where is None:
            raise HttpError(404, "no such stream")
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise HttpError(401, "expected 'Authorization: Bearer <the stream's secret>' (the hub.stream event)")
        try:
            expected = await self.tickets.stream_secret(handle)
        except TicketError as exc:
            raise HttpError(exc.status, exc.message) from None
        if not hmac.compare_digest(secret.strip().encode(), expected.encode()):
            raise HttpError(403, "this secret does not open this stream")
        body = await read_body(request, self.host.settings.max_frame_size)
        try:
            frame = body.decode()
        except UnicodeDecodeError:
            raise HttpError(400, "expected one client frame as UTF-8 JSON") from None
        routed = await self.relay.route(*where, frame)
        if routed is Routed.GONE:
            raise HttpError(404, "the stream has ended; reconnect")
        if routed is Routed.BUSY:
            raise HttpError(429, "the stream has too many frames waiting; retry shortly")
        return Response(status_code=202)

    # ------------------------------------------------------------------ CORS

    def _cors_headers(self, origin: str) -> list[tuple[str, str]] | None:
        """The CORS headers for ``origin`` ('' when not cross-origin), or None when refused."""
        if not origin:
            return []
        allowed = self.host.settings.allowed_origins
        if allowed and origin not in allowed:
            return None
        return [("access-control-allow-origin", origin), ("vary", "origin")]

    def _cors(self, handler: Handler) -> Handler:
        async def route(request: Request) -> Response:
            cors = self._cors_headers(request.headers.get("origin", ""))
            if cors is None:
                raise HttpError(403, "Origin not allowed")
            response: Response = await handler(request)
            for name, value in cors:
                response.headers[name] = value
            return response

        return route

    async def _preflight(self, request: Request) -> Response:
        cors = self._cors_headers(request.headers.get("origin", ""))
        if cors is None:
            return JSONResponse({"error": "Origin not allowed"}, status_code=403)
        return Response(status_code=204, headers=dict(cors + _CORS_ALLOW))


def _origin(scope: Scope) -> str:
    origin: bytes = dict(scope["headers"]).get(b"origin", b"")
    return origin.decode("latin-1")


def _with_headers(send: Send, extra: list[tuple[str, str]]) -> Send:
    """``send`` adding ``extra`` headers to the response start (CORS)."""
    if not extra:
        return send
    encoded = [(k.encode(), v.encode()) for k, v in extra]

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *encoded]}
        await send(message)

    return sender


async def _refuse(send: Send, status: int, message: str, headers: list[tuple[str, str]]) -> None:
    body = JSON.encode({"error": message})
    data = body.encode() if isinstance(body, str) else body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"cache-control", b"no-store"),
                *((k.encode(), v.encode()) for k, v in headers),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
