"""Token verification (and development minting): JWTs signed HS256, RS256 or ES256.

``sub`` is the user id, ``exp`` is required, ``topics`` optionally grants extra
topics. Every id and topic is validated (DESIGN.md §2) before it can become a
subscription.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from hub.codes import CloseCode
from hub.settings import Settings
from hub.topics import InvalidTopic, user_topic, validate_topic, validate_user_id

MAX_GRANTED_TOPICS = 32


class TokenError(Exception):
    """A token the hub refuses; ``code`` is 4001 (bad), 4009 (expired) or 4003 (forbidden topic)."""

    def __init__(self, message: str, code: CloseCode = CloseCode.BAD_TOKEN) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token grants: the user, the topics (own topic first) and the expiry."""

    user: str
    topics: tuple[str, ...]
    exp: float


class Authenticator:
    """Verifies tokens with the configured secret and/or public key."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._public_key = _load_key(settings.jwt_public_key) if settings.jwt_public_key else None

    def verify(self, token: str) -> Claims:
        """Return the claims of a valid token, or raise TokenError with the close code to use."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"expected a JWT, got an unreadable token ({exc})") from None
        algorithm = header.get("alg")
        if algorithm == "HS256" and self._secret:
            key: str = self._secret
        elif algorithm in ("RS256", "ES256") and self._public_key:
            key = self._public_key
        else:
            raise TokenError(f"expected a token signed with an algorithm this hub accepts, got {algorithm!r}")
        try:
            payload = jwt.decode(token, key, algorithms=[algorithm], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("the token has expired", CloseCode.TOKEN_EXPIRED) from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        try:
            user = validate_user_id(payload["sub"])
        except InvalidTopic as exc:
            raise TokenError(f"bad 'sub' claim: {exc}") from None
        return Claims(user=user, topics=_topics(user, payload.get("topics")), exp=float(payload["exp"]))

    def mint(self, user: str, *, ttl: float = 3600, topics: list[str] | None = None) -> str:
        """Sign an HS256 token with the configured secret (for development and tests)."""
        if not self._secret:
            raise TokenError("minting needs HUB_JWT_SECRET")
        claims: dict[str, object] = {"sub": validate_user_id(user), "exp": int(time.time() + ttl)}
        if topics:
            claims["topics"] = [validate_topic(t) for t in topics]
        return jwt.encode(claims, self._secret, algorithm="HS256")


def _topics(user: str, granted: object) -> tuple[str, ...]:
    topics = [user_topic(user)]
    if granted is None:
        return tuple(topics)
    if not isinstance(granted, list) or len(granted) > MAX_GRANTED_TOPICS:
        raise TokenError(f"expected 'topics' to be a list of at most {MAX_GRANTED_TOPICS} topics", CloseCode.FORBIDDEN)
    for topic in granted:
        try:
            validate_topic(topic)
        except InvalidTopic as exc:
            raise TokenError(f"topic not allowed: {exc}", CloseCode.FORBIDDEN) from None
        if topic not in topics:
            topics.append(topic)
    return tuple(topics)


def _load_key(value: str) -> str:
    if value.lstrip().startswith("-----BEGIN"):
        return value
    return Path(value).read_text()
