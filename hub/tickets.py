"""SSE tickets and stream secrets (docs/protocol.md §10).

``EventSource`` cannot send headers, and a long-lived JWT in a URL ends up in access
logs. So a client trades its token for a **ticket** (``POST /sse/ticket`` with
``Authorization: Bearer <JWT>``): a short-lived (``HUB_SSE_TICKET_TTL``), single-use
string it puts in the ``GET /sse?ticket=…`` URL. A ticket in a log is worthless: it
was used, or it expired, seconds after it was written.

A ticket is ``<expiry ms>.<id>.<mac>``: the MAC (HMAC-SHA256 under the deployment's
key) tells a forged ticket from an expired one without a look-up, and the id names the
stored token, taken atomically once (Redis ``GETDEL`` with a TTL on the distributed
backend, so any replica behind the balancer redeems it; a dict on the embedded one).
The same key signs each stream's secret (``stream_secret``), so any replica can check a
``POST /sse/<stream>`` before routing it.

The key: random per process on the embedded backend; on the distributed one, created
once in Redis (``SET NX``) and read by every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Protocol

from hub.backends.redis_client import RedisClient, deadline

#: Stored tokens kept past a ticket's expiry, so a late redeem still finds it expired
#: by its own clock rather than "used".
_GRACE = 5


class TicketError(Exception):
    """A ticket that cannot be redeemed: ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TicketStore(Protocol):
    """Where a ticket's token waits to be taken, once."""

    async def key(self) -> bytes:
        """The deployment's signing key (the same on every replica)."""
        ...

    async def put(self, ticket_id: str, token: str, ttl: float) -> None:
        """Keep ``token`` under ``ticket_id`` for ``ttl`` seconds."""
        ...

    async def take(self, ticket_id: str) -> str | None:
        """The token under ``ticket_id``, removed atomically; None when absent (used, or gone)."""
        ...


class MemoryTickets:
    """The embedded backend's store: one process, one dict."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._tokens: dict[str, tuple[float, str]] = {}

    async def key(self) -> bytes:
        return self._key

    async def put(self, ticket_id: str, token: str, ttl: float) -> None:
        now = time.monotonic()
        if len(self._tokens) > 1024:  # bounded by the TTL: drop what expired
            self._tokens = {k: v for k, v in self._tokens.items() if v[0] > now}
        self._tokens[ticket_id] = (now + ttl + _GRACE, token)

    async def take(self, ticket_id: str) -> str | None:
        entry = self._tokens.pop(ticket_id, None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]


class RedisTickets:
    """The distributed backend's store: every replica redeems every ticket; calls have a deadline."""

    def __init__(self, redis: RedisClient, *, prefix: str, timeout: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        self._key: bytes | None = None

    async def key(self) -> bytes:
        if self._key is None:
            name = f"{self._prefix}sse:key"
            async with deadline("the SSE signing key", self._timeout):
                await self._redis.set(name, secrets.token_hex(32), nx=True)
                value = await self._redis.get(name)
            if not value:
                raise TicketError(503, "the SSE signing key is not readable; try again")
            self._key = value.encode() if isinstance(value, str) else bytes(value)
        return self._key

    async def put(self, ticket_id: str, token: str, ttl: float) -> None:
        async with deadline("an SSE ticket", self._timeout):
            await self._redis.set(f"{self._prefix}sse:ticket:{ticket_id}", token, ex=max(1, int(ttl + _GRACE)))

    async def take(self, ticket_id: str) -> str | None:
        async with deadline("an SSE ticket", self._timeout):
            value = await self._redis.getdel(f"{self._prefix}sse:ticket:{ticket_id}")
        if value is None:
            return None
        return value if isinstance(value, str) else bytes(value).decode()


class Tickets:
    """Issues and redeems tickets; signs stream secrets."""

    def __init__(self, store: TicketStore, ttl: float) -> None:
        self.store = store
        self.ttl = ttl

    async def issue(self, token: str) -> tuple[str, float]:
        """A ticket for ``token`` (already verified by the caller) and its lifetime in seconds."""
        expires = int((time.time() + self.ttl) * 1000)
        ticket_id = secrets.token_urlsafe(18)
        body = f"{expires}.{ticket_id}"
        await self.store.put(ticket_id, token, self.ttl)
        return f"{body}.{await self._mac(body)}", self.ttl

    async def redeem(self, ticket: str) -> str:
        """The token of ``ticket``, which is used up; raises TicketError (401) when it is
        malformed or forged, expired, or already used."""
        if not ticket:
            raise TicketError(401, "expected ?ticket=<a ticket from POST /sse/ticket>")
        expires, _, rest = ticket.partition(".")
        ticket_id, _, mac = rest.partition(".")
        if not (expires.isdigit() and len(expires) < 20 and ticket_id and mac):
            raise TicketError(401, "malformed ticket")
        if not hmac.compare_digest(mac, await self._mac(f"{expires}.{ticket_id}")):
            raise TicketError(401, "forged ticket: its signature does not match")
        if int(expires) <= time.time() * 1000:
            raise TicketError(401, "expired ticket: get a new one from POST /sse/ticket")
        token = await self.store.take(ticket_id)
        if token is None:
            raise TicketError(401, "ticket already used: get a new one from POST /sse/ticket")
        return token

    async def stream_secret(self, handle: str) -> str:
        """The secret that authorizes ``POST /sse/<handle>`` (the same on every replica)."""
        return await self._mac(f"stream:{handle}")

    async def _mac(self, text: str) -> str:
        digest = hmac.new(await self.store.key(), text.encode(), hashlib.sha256).hexdigest()
        return digest[:43]
