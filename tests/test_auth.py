"""Token verification: HS256 with a secret, RS256/ES256 with a public key."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.auth import Authenticator, TokenError
from hub.codes import CloseCode
from hub.settings import Settings

SECRET = "a-secret-of-at-least-thirty-two-bytes!!"


def settings(**kwargs: object) -> Settings:
    return Settings.from_env({}, **kwargs)


def exp(seconds: float = 60) -> int:
    return int(time.time() + seconds)


def test_hs256() -> None:
    auth = Authenticator(settings(jwt_secret=SECRET))
    claims = auth.verify(jwt.encode({"sub": "42", "exp": exp(), "topics": ["team.1"]}, SECRET, algorithm="HS256"))
    assert claims.user == "42"
    assert claims.topics == ("user.42", "team.1")


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_algorithms(tmp_path: Path, algorithm: str) -> None:
    private = rsa.generate_private_key(65537, 2048) if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem)
    for configured in (str(key_file), pem.decode()):
        auth = Authenticator(settings(jwt_public_key=configured, jwt_secret=None))
        token = jwt.encode({"sub": "7", "exp": exp()}, private, algorithm=algorithm)
        assert auth.verify(token).user == "7"
    hs = jwt.encode({"sub": "7", "exp": exp()}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError):
        Authenticator(settings(jwt_public_key=str(key_file), jwt_secret=None)).verify(hs)


def test_alg_none_is_refused() -> None:
    token = jwt.encode({"sub": "42", "exp": exp()}, None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(TokenError) as caught:
        Authenticator(settings(jwt_secret=SECRET)).verify(token)
    assert caught.value.code == CloseCode.BAD_TOKEN


def test_expired_is_4009() -> None:
    token = jwt.encode({"sub": "42", "exp": exp(-1)}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError) as caught:
        Authenticator(settings(jwt_secret=SECRET)).verify(token)
    assert caught.value.code == CloseCode.TOKEN_EXPIRED


def test_duplicate_granted_topics_collapse() -> None:
    token = jwt.encode({"sub": "1", "exp": exp(), "topics": ["user.1", "b", "b"]}, SECRET, algorithm="HS256")
    assert Authenticator(settings(jwt_secret=SECRET)).verify(token).topics == ("user.1", "b")


def test_too_many_granted_topics_is_forbidden() -> None:
    token = jwt.encode({"sub": "1", "exp": exp(), "topics": [f"t{i}" for i in range(40)]}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError) as caught:
        Authenticator(settings(jwt_secret=SECRET)).verify(token)
    assert caught.value.code == CloseCode.FORBIDDEN


def test_mint_round_trips() -> None:
    auth = Authenticator(settings(jwt_secret=SECRET))
    claims = auth.verify(auth.mint("9", ttl=30, topics=["news"]))
    assert claims.topics == ("user.9", "news")
    assert claims.exp <= time.time() + 31
