"""The HTTP API of read state, for backends (docs/protocol.md §9): API key required.

- ``GET /api/unread?user=1,2[&topic=T,…]`` → ``{"users": {"1": {"user.1": 3}, …}}``: each
  user's unread count of each topic (default: the user's own topic);
- ``GET /api/notifications/{user}?topic=T&before=OFFSET&limit=N`` → a page of the user's
  retained notifications of the topic, newest first, each with ``read``; ``next`` is the
  ``before`` of the next page (null at the end);
- ``POST /api/read`` ``{"user", "topic"?, "up_to"?, "offsets"?}`` → the state after the
  change, told to every socket of the user as a ``read`` frame.

Everything is checked as a socket's ``read`` frame is (hub/protocol.py): 400 with the
reason for bad input, 404 when the hub keeps no read state (history off), 503 when Redis
or RabbitMQ does not answer.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub.backends.base import Reads
from hub.http_api import HttpError, read_body
from hub.payload import BadPayload, loads_json
from hub.protocol import MAX_READ_OFFSETS
from hub.topics import InvalidTopic, Offset, user_topic, validate_topic, validate_user_id

MAX_USERS: Final = 1000
MAX_TOPICS: Final = 32
MAX_PAGE: Final = 200
DEFAULT_PAGE: Final = 50


def _reads(reads: Reads | None) -> Reads:
    if reads is None:
        raise HttpError(404, "read state is not kept on this hub (history is off)")
    return reads


def _listed(request: Request, name: str) -> list[str]:
    return [v for part in request.query_params.getlist(name) for v in part.split(",") if v]


def _checked(check: Any, value: object) -> Any:
    try:
        return check(value)
    except InvalidTopic as exc:  # every check of hub.topics raises it (a ValueError)
        raise HttpError(400, str(exc)) from None


async def unread(reads: Reads | None, request: Request) -> Response:
    """``GET /api/unread``."""
    store = _reads(reads)
    users = [_checked(validate_user_id, u) for u in _listed(request, "user")]
    topics = [_checked(validate_topic, t) for t in _listed(request, "topic")]
    if not users or len(users) > MAX_USERS:
        raise HttpError(400, f"expected 1 to {MAX_USERS} users as ?user=1&user=2 or ?user=1,2")
    if len(topics) > MAX_TOPICS:
        raise HttpError(400, f"expected at most {MAX_TOPICS} topics")
    counts = await asyncio.gather(*(store.unread(u, topics or [user_topic(u)]) for u in users))
    return JSONResponse({"users": dict(zip(users, counts, strict=True))})


async def page(reads: Reads | None, request: Request) -> Response:
    """``GET /api/notifications/{user}``."""
    store = _reads(reads)
    user = _checked(validate_user_id, request.path_params["user"])
    query = request.query_params
    topic = _checked(validate_topic, query["topic"]) if "topic" in query else user_topic(user)
    before = str(_checked(Offset.parse, query["before"])) if "before" in query else None
    raw = query.get("limit", str(DEFAULT_PAGE))
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE):
        raise HttpError(400, f"expected 'limit' to be 1 to {MAX_PAGE}, got {raw!r:.20}")
    limit = int(raw)
    entries = await store.page(user, topic, before=before, limit=limit)
    items = [
        {
            "id": e.notification.id,
            "offset": e.notification.offset,
            "ts": e.notification.ts,
            "data": e.notification.data,
            "read": e.read,
        }
        for e in entries
    ]
    following = items[-1]["offset"] if len(items) == limit else None
    return JSONResponse({"user": user, "topic": topic, "notifications": items, "next": following})


async def mark(reads: Reads | None, request: Request) -> Response:
    """``POST /api/read``."""
    store = _reads(reads)
    try:
        body = loads_json(await read_body(request))
    except BadPayload as exc:
        raise HttpError(400, f"bad JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise HttpError(400, f"expected a JSON object, got {type(body).__name__}")
    user = _checked(validate_user_id, body.get("user"))
    topic = _checked(validate_topic, body["topic"]) if body.get("topic") is not None else user_topic(user)
    up_to = None if body.get("up_to") is None else str(_checked(Offset.parse, body["up_to"]))
    offsets = body.get("offsets") or []
    if not isinstance(offsets, list) or len(offsets) > MAX_READ_OFFSETS:
        raise HttpError(400, f"expected 'offsets' to be a list of at most {MAX_READ_OFFSETS} offsets")
    marks = [str(_checked(Offset.parse, o)) for o in offsets]
    if up_to is None and not marks:
        raise HttpError(400, "expected 'up_to' or a non-empty 'offsets'")
    state = await store.mark(user, topic, up_to=up_to, offsets=marks)
    answer = {
        "user": user,
        "topic": topic,
        "up_to": state.up_to,
        "offsets": list(state.offsets),
        "unread": state.unread,
    }
    return JSONResponse(answer)
