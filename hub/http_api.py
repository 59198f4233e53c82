"""The HTTP API's edge: bounded bodies, strictly parsed publish requests, JSON errors.

Everything a request carries is hostile until checked here (docs/protocol.md §4, §8):
a body is counted while it streams and refused with 413 as soon as it passes
``MAX_BODY`` (or at once when its ``Content-Length`` says it will); JSON is parsed by
``hub.payload.loads_json`` (no NaN/Infinity, no lone surrogates, nesting bounded); the
``id`` and ``ttl`` of a publish are checked by ``hub.wire`` so the broker takes them.
Every failure of a route becomes a JSON answer with a message: ``HttpError`` its own
status, ``BackendUnavailable`` 503, anything unforeseen 500 (logged once, with its
traceback).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from hub.backends.base import BackendUnavailable
from hub.payload import BadPayload, loads_json
from hub.topics import InvalidTopic, user_topic, validate_topic
from hub.wire import validate_message_id, validate_priority, validate_ttl

#: The largest request body the API reads (1 MiB).
MAX_BODY: Final = 1_048_576

log = logging.getLogger("hub.http")

Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    """A request the API refuses with ``status``; the message says what was expected."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    """The API's error answer: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status)


def guarded(handler: Handler) -> Handler:
    """``handler`` with every failure answered in JSON (see the module docstring)."""

    @functools.wraps(handler)
    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except HttpError as exc:
            return error(exc.status, str(exc))
        except BackendUnavailable as exc:
            return error(503, f"unavailable, try again: {exc}")
        except ClientDisconnect:
            return error(400, "the client went away before its request was complete")
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.url.path)
            return error(500, f"internal error ({type(exc).__name__}); the hub logged it")

    return route


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, at most ``limit`` bytes; HttpError 413 otherwise.

    A ``Content-Length`` over the limit is refused before a byte is read; a body without
    one (chunked) or longer than it claimed is counted while it streams and refused as
    soon as the count passes the limit, so no more than ``limit`` bytes are ever held.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"expected a body of at most {limit} bytes, Content-Length says {int(declared)}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"expected a body of at most {limit} bytes, got more")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """A checked ``POST /api/publish`` body."""

    topic: str
    data: Any
    message_id: str | None
    ttl: float | None
    priority: int | None = None


def parse_publish(body: bytes) -> PublishRequest:
    """``{"user"|"topic", "data", "id"?, "ttl"?, "priority"?}`` → PublishRequest; HttpError 400 with the reason."""
    try:
        payload = loads_json(body)
    except BadPayload as exc:
        raise HttpError(400, f"bad JSON body: {exc}") from None
    if not isinstance(payload, dict):
        raise HttpError(400, f"expected a JSON object, got {type(payload).__name__}")
    if ("user" in payload) == ("topic" in payload):
        raise HttpError(400, "expected exactly one of 'user' or 'topic'")
    if "data" not in payload:
        raise HttpError(400, "expected a 'data' field (any JSON value)")
    try:
        topic = user_topic(payload["user"]) if "user" in payload else validate_topic(payload["topic"])
        message_id = None if payload.get("id") is None else validate_message_id(payload["id"])
        ttl = None if payload.get("ttl") is None else validate_ttl(payload["ttl"])
        priority = None if payload.get("priority") is None else validate_priority(payload["priority"])
    except (InvalidTopic, ValueError) as exc:
        raise HttpError(400, str(exc)) from None
    return PublishRequest(topic, payload["data"], message_id, ttl, priority)
