"""Token verification (and development minting): JWTs signed HS256, RS256 or ES256.

``sub`` is the user id, ``exp`` is required, ``topics`` optionally grants extra
topics (docs/protocol.md §3). Every id and topic is validated (docs/protocol.md §2)
before it can become a subscription. ``HUB_JWT_AUDIENCE`` makes ``aud`` required and
checked; without it a token carrying any ``aud`` is refused (it was meant for another
service). ``HUB_JWT_ISSUER`` makes ``iss`` required and checked. ``HUB_JWT_LEEWAY``
seconds of clock skew are allowed on ``exp``, ``nbf`` and ``iat``.

A token is hostile input: whatever it holds, ``verify`` returns claims or raises
``TokenError`` (4001, 4009 when expired, 4003 for a forbidden topic), nothing else.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm

from hub.codes import CloseCode
from hub.settings import ConfigError, Settings
from hub.topics import InvalidTopic, user_topic, validate_topic, validate_user_id
from hubnotify.tokens import mint_token

MAX_GRANTED_TOPICS = 32
#: Expiries past this (year 2286) are taken as "never": a float can hold them all.
FAR_FUTURE = 10_000_000_000


class TokenError(Exception):
    """A token the hub refuses; ``code`` is 4001 (bad), 4009 (expired) or 4003 (forbidden topic)."""

    def __init__(self, message: str, code: CloseCode = CloseCode.BAD_TOKEN) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token grants: the user, the topics (own topic first) and until when.

    ``exp`` is the moment the hub stops honouring the token: its ``exp`` claim plus the
    leeway, so a token accepted within the leeway is not closed as expired at once.
    """

    user: str
    topics: tuple[str, ...]
    exp: float


class Authenticator:
    """Verifies tokens with the configured secret and/or public key.

    Raises ConfigError at construction when ``HUB_JWT_PUBLIC_KEY`` cannot be read or is
    neither an RSA key (RS256) nor a P-256 EC key (ES256).
    """

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._public_key: Any = None
        self._public_algorithm: str | None = None
        if settings.jwt_public_key:
            self._public_key, self._public_algorithm = _load_public_key(settings.jwt_public_key)
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway
        required = ["exp", "sub"]
        required += ["aud"] if self._audience else []
        required += ["iss"] if self._issuer else []
        self._options: Any = {"require": required}
        self._jwt = _decoder()

    def verify(self, token: str) -> Claims:
        """Return the claims of a valid token, or raise TokenError with the close code to use."""
        try:
            payload = self._decode(token)
        except TokenError:
            raise
        except jwt.ExpiredSignatureError:
            raise TokenError("the token has expired", CloseCode.TOKEN_EXPIRED) from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        except Exception as exc:  # a hostile token can break the decoder in ways PyJWT does not wrap
            raise TokenError(f"invalid token: unreadable ({type(exc).__name__})") from None
        try:
            user = validate_user_id(payload["sub"])
        except InvalidTopic as exc:
            raise TokenError(f"bad 'sub' claim: {exc}") from None
        topics = _topics(user, payload.get("topics"))
        # PyJWT checked that exp is an integer (of any size) not in the past.
        exp = min(int(payload["exp"]), FAR_FUTURE) + self._leeway
        return Claims(user=user, topics=topics, exp=float(exp))

    def _decode(self, token: str) -> dict[str, Any]:
        algorithm = _algorithm(token)
        key: Any
        if algorithm == "HS256" and self._secret:
            key = self._secret
        elif algorithm is not None and algorithm == self._public_algorithm:
            key = self._public_key
        else:
            accepted = [a for a, k in (("HS256", self._secret), (self._public_algorithm, self._public_key)) if k]
            raise TokenError(f"expected a token signed with {' or '.join(map(str, accepted))}, got {algorithm!r:.40}")
        payload: dict[str, Any] = self._jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=self._audience,
            issuer=self._issuer,
            leeway=self._leeway,
            options=self._options,
        )
        return payload

    def mint(self, user: str, *, ttl: float = 3600, topics: list[str] | None = None) -> str:
        """Sign an HS256 token with the configured secret (for development and tests).

        ``hubnotify.mint_token``, with this hub's secret, audience and issuer, so this hub
        accepts it. Raises TokenError without a secret, InvalidTopic for a bad user id or
        topic, ValueError for a ttl that is not a positive number.
        """
        if not self._secret:
            raise TokenError(
                "minting needs HUB_JWT_SECRET (HS256); with only HUB_JWT_PUBLIC_KEY, "
                "tokens are signed by whoever holds the private key"
            )
        return mint_token(
            user, secret=self._secret, ttl=ttl, topics=topics, audience=self._audience, issuer=self._issuer
        )


class _PreparedHMAC(HMACAlgorithm):
    """HS256 that checks its secret once: PyJWT prepares the key on every decode, and its
    check that an HMAC secret is not an asymmetric key (two failed DER parses) cost more
    than the signature itself. The hub only ever passes its one configured secret."""

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._key: str | bytes | None = None
        self._prepared = b""

    def prepare_key(self, key: str | bytes) -> bytes:
        if key != self._key:
            self._prepared, self._key = super().prepare_key(key), key
        return self._prepared


def _decoder() -> jwt.PyJWT:
    """A PyJWT of our own whose HS256 prepares its key once (``_PreparedHMAC``); without the
    internals that allow it (an older PyJWT), PyJWT's own, which is slower, not different."""
    decoder = jwt.PyJWT()
    jws = jwt.PyJWS()
    jws.unregister_algorithm("HS256")
    jws.register_algorithm("HS256", _PreparedHMAC())
    if isinstance(getattr(decoder, "_jws", None), jwt.PyJWS):
        decoder._jws = jws
    return decoder


def _algorithm(token: str) -> str | None:
    """The ``alg`` of the token's header, to choose the key; None when the header is unreadable.

    Only the header is read here (PyJWT's ``get_unverified_header`` parses and checks the
    whole token, which ``decode`` then does again); whatever the token holds, ``decode``
    checks it strictly.
    """
    segment = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError):  # binascii.Error and JSONDecodeError are ValueErrors
        return None
    algorithm = header.get("alg") if isinstance(header, dict) else None
    return algorithm if isinstance(algorithm, str) else None


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


def _load_public_key(value: str) -> tuple[Any, str]:
    """The key object and the one algorithm it verifies; ConfigError when unusable."""
    if value.lstrip().startswith("-----BEGIN"):
        pem = value.encode()
    else:
        try:
            pem = Path(value).read_bytes()
        except OSError as exc:
            raise ConfigError(f"HUB_JWT_PUBLIC_KEY: cannot read {value!r}: {exc.strerror or exc}") from None
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"HUB_JWT_PUBLIC_KEY: expected a PEM public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ConfigError(f"HUB_JWT_PUBLIC_KEY: expected an RSA (RS256) or P-256 EC (ES256) key, got {type(key).__name__}")
