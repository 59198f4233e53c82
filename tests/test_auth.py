"""Token verification: HS256 with a secret, RS256/ES256 with a public key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.auth import Authenticator, TokenError
from hub.codes import CloseCode
from hub.settings import ConfigError, Settings
from tests.harness import run_hub

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
    token = jwt.encode({"sub": "42", "exp": exp(-30)}, SECRET, algorithm="HS256")
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
    assert claims.exp <= time.time() + 31 + 5  # the default leeway included


def hs(claims: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode({"sub": "42", "exp": exp(), **claims}, secret, algorithm="HS256")


def refused(auth: Authenticator, token: str) -> TokenError:
    with pytest.raises(TokenError) as caught:
        auth.verify(token)
    return caught.value


def test_audience_when_configured_is_required_and_checked() -> None:
    auth = Authenticator(settings(jwt_secret=SECRET, jwt_audience="hub"))
    assert auth.verify(hs({"aud": "hub"})).user == "42"
    assert auth.verify(hs({"aud": ["other", "hub"]})).user == "42"
    for claims in ({}, {"aud": "other"}, {"aud": ["other"]}):
        error = refused(auth, hs(claims))
        assert error.code == CloseCode.BAD_TOKEN
        assert "aud" in str(error).lower()


def test_without_audience_a_token_with_aud_is_refused() -> None:
    auth = Authenticator(settings(jwt_secret=SECRET))
    assert auth.verify(hs({})).user == "42"
    assert refused(auth, hs({"aud": "some-other-service"})).code == CloseCode.BAD_TOKEN


def test_issuer_when_configured_is_required_and_checked() -> None:
    auth = Authenticator(settings(jwt_secret=SECRET, jwt_issuer="https://auth.example"))
    assert auth.verify(hs({"iss": "https://auth.example"})).user == "42"
    assert refused(auth, hs({})).code == CloseCode.BAD_TOKEN
    assert refused(auth, hs({"iss": "https://evil.example"})).code == CloseCode.BAD_TOKEN
    # unset: any issuer is fine
    assert Authenticator(settings(jwt_secret=SECRET)).verify(hs({"iss": "anyone"})).user == "42"


def test_minted_tokens_carry_the_configured_audience_and_issuer() -> None:
    auth = Authenticator(settings(jwt_secret=SECRET, jwt_audience="hub", jwt_issuer="me"))
    assert auth.verify(auth.mint("5")).user == "5"


def test_leeway_on_exp_nbf_and_iat() -> None:
    lenient = Authenticator(settings(jwt_secret=SECRET))  # default leeway: 5 s
    strict = Authenticator(settings(jwt_secret=SECRET, jwt_leeway=0))
    just_expired = hs({"exp": exp(-2)})
    claims = lenient.verify(just_expired)
    assert claims.exp > time.time(), "accepted within the leeway, so not closed as expired at once"
    assert refused(strict, just_expired).code == CloseCode.TOKEN_EXPIRED
    assert refused(lenient, hs({"exp": exp(-30)})).code == CloseCode.TOKEN_EXPIRED
    for claim in ("nbf", "iat"):
        soon = hs({claim: exp(2)})
        assert lenient.verify(soon).user == "42"
        assert refused(strict, soon).code == CloseCode.BAD_TOKEN
        assert refused(lenient, hs({claim: exp(60)})).code == CloseCode.BAD_TOKEN


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: bytes, payload: bytes) -> str:
    """A token with arbitrary header and payload text, correctly HS256-signed with SECRET."""
    head, body = _b64(header), _b64(payload)
    signature = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


HS_HEADER = b'{"alg":"HS256","typ":"JWT"}'


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x",
        "a.b.c",
        "a.b.c.d.e",
        signed(b"[" * 100_000, b"{}"),
        signed(b'{"alg":["HS256"]}', b"{}"),
        signed(b'{"alg":"HS512"}', b'{"sub":"1","exp":99999999999}'),
        signed(HS_HEADER, b"[" * 100_000),
        signed(HS_HEADER, b"[1]"),
        signed(HS_HEADER, b'{"sub":"1","exp":Infinity}'),
        signed(HS_HEADER, b'{"sub":"1","exp":NaN}'),
        signed(HS_HEADER, b'{"sub":"1","exp":99999999999,"nbf":Infinity}'),
        signed(HS_HEADER, b'{"sub":"1","exp":99999999999,"iat":-Infinity}'),
        signed(HS_HEADER, b'{"sub":"\\ud800","exp":99999999999}'),
        signed(HS_HEADER, b'{"sub":1,"exp":99999999999}'),
        signed(HS_HEADER, b'{"exp":99999999999}'),
        signed(HS_HEADER, b'{"sub":"1"}'),
        signed(HS_HEADER, b"\xff\xfe"),
    ],
)
def test_hostile_tokens_are_4001(token: str) -> None:
    assert refused(Authenticator(settings(jwt_secret=SECRET)), token).code == CloseCode.BAD_TOKEN


def test_an_absurd_expiry_is_taken_as_far_future() -> None:
    claims = Authenticator(settings(jwt_secret=SECRET)).verify(
        signed(HS_HEADER, b'{"sub":"1","exp":1' + b"0" * 400 + b"}")
    )
    assert time.time() < claims.exp < float("inf")


def pem_of(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    public = private.public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_a_token_of_the_other_key_type_is_4001() -> None:
    rsa_key, ec_key = rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1())
    rsa_hub = Authenticator(settings(jwt_public_key=pem_of(rsa_key), jwt_secret=None))
    ec_hub = Authenticator(settings(jwt_public_key=pem_of(ec_key), jwt_secret=None))
    es256 = jwt.encode({"sub": "1", "exp": exp()}, ec_key, algorithm="ES256")
    rs256 = jwt.encode({"sub": "1", "exp": exp()}, rsa_key, algorithm="RS256")
    assert "RS256" in str(refused(rsa_hub, es256))
    assert "ES256" in str(refused(ec_hub, rs256))
    other_rsa = rsa.generate_private_key(65537, 2048)
    forged = jwt.encode({"sub": "1", "exp": exp()}, other_rsa, algorithm="RS256")
    assert refused(rsa_hub, forged).code == CloseCode.BAD_TOKEN


def test_an_unusable_public_key_is_a_configuration_error(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed_pem = pem_of(ed25519.Ed25519PrivateKey.generate())  # type: ignore[arg-type]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    for value, message in ((str(tmp_path / "missing.pem"), "cannot read"), (str(garbage), "PEM"), (ed_pem, "RSA")):
        with pytest.raises(ConfigError, match=message):
            Authenticator(settings(jwt_public_key=value, jwt_secret=None))


def test_minting_without_a_secret_says_so() -> None:
    key = pem_of(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(TokenError, match="HUB_JWT_SECRET"):
        Authenticator(settings(jwt_public_key=key, jwt_secret=None)).mint("1")


async def test_a_socket_with_an_es256_token_on_an_rs256_hub_is_closed_4001() -> None:
    rsa_key, ec_key = rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1())
    async with run_hub("memory", env={"HUB_JWT_PUBLIC_KEY": pem_of(rsa_key)}) as hub:
        bystander = await hub.connect("b1")
        es256 = jwt.encode({"sub": "1", "exp": exp()}, ec_key, algorithm="ES256")
        hostile = [es256, signed(HS_HEADER, b'{"sub":"1","exp":Infinity}'), signed(b"[" * 30_000, b"{}")]
        for token in hostile:
            client = await hub.connect(token=token, expect_connected=False)
            closed = await client.closed()
            assert closed.code == CloseCode.BAD_TOKEN, closed
            assert closed.error is not None
            assert closed.error["code"] == CloseCode.BAD_TOKEN
        await hub.publish("b1", "still here")
        [frame] = await bystander.notifications(1)
        assert frame["data"] == "still here"
        await bystander.close()


def test_each_authenticator_checks_with_its_own_secret_prepared_once() -> None:
    other_secret = "another-secret-of-at-least-thirty-two-bytes"
    ours, theirs = Authenticator(settings(jwt_secret=SECRET)), Authenticator(settings(jwt_secret=other_secret))
    token = jwt.encode({"sub": "7", "exp": exp()}, SECRET, algorithm="HS256")
    for _ in range(2):  # the second time from the prepared key
        assert ours.verify(token).user == "7"
        assert refused(theirs, token).code == CloseCode.BAD_TOKEN
    assert theirs.verify(jwt.encode({"sub": "8", "exp": exp()}, other_secret, algorithm="HS256")).user == "8"


def test_a_header_read_leniently_to_choose_the_key_is_still_checked_strictly() -> None:
    token = jwt.encode({"sub": "7", "exp": exp()}, SECRET, algorithm="HS256")
    head, _, rest = token.partition(".")
    assert refused(Authenticator(settings(jwt_secret=SECRET)), f"{head}!!.{rest}").code == CloseCode.BAD_TOKEN
