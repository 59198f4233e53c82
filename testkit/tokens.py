"""The test deployment's credentials and HS256 tokens minted the way a backend would mint them."""

from __future__ import annotations

import time
from typing import Any

import jwt

#: HUB_JWT_SECRET and HUB_API_KEY of every hub the tests and benchmarks start.
SECRET = "test-secret-that-is-long-enough-for-hs256"
API_KEY = "test-api-key"


def make_token(
    user: str,
    *,
    ttl: float = 300,
    topics: list[str] | None = None,
    secret: str = SECRET,
    **claims: Any,
) -> str:
    """An HS256 token for ``user`` expiring in ``ttl`` seconds (negative: already expired).

    ``topics`` becomes the ``topics`` claim when given; further ``claims`` are added as
    they are (``aud``, ``iss``, …). Nothing is validated: tests mint bad tokens on purpose.
    """
    payload: dict[str, Any] = {"sub": user, "exp": int(time.time() + ttl), **claims}
    if topics is not None:
        payload["topics"] = topics
    return jwt.encode(payload, secret, algorithm="HS256")
