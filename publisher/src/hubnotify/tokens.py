"""Tokens for your users: what a backend's token endpoint returns (docs/protocol.md §3).

A browser connects with a JWT your backend minted for the user logged in there; the hub
never sees your sessions. ``mint_token`` makes one the hub accepts:

    from hubnotify import mint_token

    def hub_token(request):                          # your endpoint behind getToken()
        token = mint_token(request.user.id, secret=settings.HUB_JWT_SECRET)
        return JsonResponse({"token": token}, headers={"Cache-Control": "no-store"})
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import jwt

from hubnotify.topics import as_user_id, validate_topic

#: The algorithms the hub verifies: HS256 with ``HUB_JWT_SECRET``; RS256 or ES256 (P-256)
#: with ``HUB_JWT_PUBLIC_KEY`` (sign with the private key; needs ``PyJWT[crypto]``).
ALGORITHMS = ("HS256", "RS256", "ES256")


def mint_token(
    user: str | int,
    *,
    secret: str | bytes | Any,
    topics: Iterable[str] | None = None,
    ttl: float = 3600,
    audience: str | None = None,
    issuer: str | None = None,
    algorithm: str = "HS256",
) -> str:
    """A token for ``user`` (an id or an integer key: ``42`` → ``"42"``) valid for ``ttl`` seconds.

    Claims: ``sub`` (the user id), ``iat``, ``exp``; ``topics`` when extra topics are
    granted (``user.<id>`` always is); ``aud`` / ``iss`` when given — a hub with
    ``HUB_JWT_AUDIENCE`` / ``HUB_JWT_ISSUER`` requires matching ones. ``secret`` is the
    hub's ``HUB_JWT_SECRET`` for HS256, or the private key (PEM text or a key object) for
    RS256 / ES256.

    Raises InvalidTopic for a bad user id or topic, ValueError for a ttl that is not a
    positive number, an empty secret or an algorithm the hub does not verify. The client
    refreshes its token before ``exp``, so a short ``ttl`` costs nothing.
    """
    sub = as_user_id(user)
    granted = [validate_topic(topic) for topic in topics or ()]
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"expected 'ttl' to be a positive number of seconds, got {ttl!r:.40}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"expected an algorithm the hub verifies ({', '.join(ALGORITHMS)}), got {algorithm!r:.40}")
    if not secret:
        raise ValueError("expected the hub's HUB_JWT_SECRET (HS256) or a private key (RS256/ES256), got nothing")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + math.ceil(ttl)}
    if granted:
        claims["topics"] = granted
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=algorithm)
