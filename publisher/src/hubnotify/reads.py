"""Read state from a backend (docs/protocol.md §9): the hub's HTTP read API, with its API key.

What a backend needs to decide "still unread after 10 minutes → send an e-mail":

    reads = HubReads("https://hub.example.com", api_key="…")
    reads.unread([42, 43])                  # {"42": {"user.42": 3}, "43": {"user.43": 0}}
    reads.notifications(42, limit=20)       # newest first, each with "read"; "next" pages on
    reads.mark_read(42, up_to="1717-0")     # every tab and device of user 42 hears it

Plain ``urllib`` (no dependency): calls block for at most ``timeout`` seconds; the async
``Publisher`` runs them in a worker thread. Errors raise ``ReadsError`` with the hub's
status and message (400 bad input, 401 wrong key, 404 history off, 503 retry later).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

from hubnotify.topics import as_user_id, validate_topic


class ReadsError(Exception):
    """The hub refused a read-state call (``status`` 0: it could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


class HubReads:
    """The hub's read-state API at ``hub_url`` (its HTTP base URL) with ``api_key`` (HUB_API_KEY)."""

    def __init__(self, hub_url: str, *, api_key: str, timeout: float = 10.0) -> None:
        self._base = hub_url.rstrip("/")
        self._key = api_key
        self._timeout = timeout

    def unread(self, users: Iterable[str | int], topics: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Each user's unread count per topic (default: the user's own topic)."""
        query = [("user", ",".join(as_user_id(u) for u in users))]
        if topics:
            query.append(("topic", ",".join(validate_topic(t) for t in topics)))
        answer: dict[str, dict[str, int]] = self._call("GET", "/api/unread?" + urllib.parse.urlencode(query))["users"]
        return answer

    def notifications(
        self, user: str | int, *, topic: str | None = None, before: str | None = None, limit: int = 50
    ) -> dict[str, Any]:
        """A page of the user's retained notifications, newest first, each with ``read``;
        pass the answer's ``next`` as ``before`` for the next page (None at the end)."""
        query: dict[str, str | int] = {"limit": limit}
        if topic is not None:
            query["topic"] = validate_topic(topic)
        if before is not None:
            query["before"] = before
        path = f"/api/notifications/{as_user_id(user)}?{urllib.parse.urlencode(query)}"
        return self._call("GET", path)

    def mark_read(
        self, user: str | int, *, topic: str | None = None, up_to: str | None = None, offsets: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Mark read up to ``up_to`` and/or single ``offsets`` (at most 100); answers the state
        after the change (``up_to``, ``offsets``, ``unread``), sent to the user's sockets too."""
        body: dict[str, Any] = {"user": as_user_id(user)}
        if topic is not None:
            body["topic"] = validate_topic(topic)
        if up_to is not None:
            body["up_to"] = up_to
        if offsets:
            body["offsets"] = list(offsets)
        return self._call("POST", "/api/read", body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise ReadsError(exc.code, str(message)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ReadsError(0, f"hub at {self._base} not reachable: {exc}") from None
