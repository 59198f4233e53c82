"""Configuration from HUB_* variables and the ``hub`` command line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hub.auth import Authenticator
from hub.settings import (
    DEV_API_KEY,
    DEV_JWT_SECRET,
    ConfigError,
    Settings,
    config_table,
    documented_fields,
    effective_table,
)


def test_defaults_are_embedded_with_dev_credentials() -> None:
    settings = Settings.from_env({})
    assert not settings.distributed
    assert settings.jwt_secret == DEV_JWT_SECRET
    assert settings.api_key == DEV_API_KEY
    assert settings.dev_defaults == ("HUB_JWT_SECRET", "HUB_API_KEY")
    assert settings.demo_enabled
    assert settings.replica_id.endswith(":8080")


def test_environment_is_parsed() -> None:
    settings = Settings.from_env(
        {
            "HUB_PORT": "9000",
            "HUB_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "HUB_HISTORY_SIZE": "0",
            "HUB_DEMO": "off",
            "HUB_PING_INTERVAL": "2.5",
            "HUB_REPLICA_ID": "r1",
        }
    )
    assert settings.port == 9000
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert not settings.history_enabled
    assert settings.demo is False
    assert settings.ping_interval == 2.5
    assert settings.replica_id == "r1"


def test_flags_override_environment() -> None:
    assert Settings.from_env({"HUB_PORT": "9000"}, port=9001).port == 9001


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HUB_PORT": "eighty"}, "HUB_PORT"),
        ({"HUB_PING_INTERVAL": "0"}, "HUB_PING_INTERVAL"),
        ({"HUB_HISTORY_SIZE": "-1"}, "HUB_HISTORY_SIZE"),
        ({"HUB_SEQUENCER_LINGER": "-0.001"}, "HUB_SEQUENCER_LINGER"),
        ({"HUB_SEQUENCER_LINGER": "5"}, "HUB_SEQUENCER_LINGER"),
        ({"HUB_DEMO": "maybe"}, "HUB_DEMO"),
        ({"HUB_AMQP_URL": "amqp://x"}, "HUB_REDIS_URL"),
        ({"HUB_EXCHANGE": "a.*"}, "HUB_EXCHANGE"),
        ({"HUB_AMQP_URL": "amqp://x", "HUB_REDIS_URL": "redis://x"}, "HUB_JWT_SECRET"),
        ({"HUB_AMQP_URL": "amqp://x", "HUB_REDIS_URL": "redis://x", "HUB_JWT_SECRET": "s" * 32}, "HUB_API_KEY"),
    ],
)
def test_bad_configuration_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_config_table_documents_every_setting() -> None:
    table = config_table()
    for name in ("HUB_AMQP_URL", "HUB_JWT_SECRET", "HUB_HISTORY_SIZE", "HUB_DRAIN_SECONDS", "HUB_EXCHANGE"):
        assert f"`{name}`" in table


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_cli_token() -> None:
    secret = "cli-secret-that-is-long-enough-for-hs256"
    result = run_cli("token", "--user", "42", "--ttl", "60", "--topic", "news", env={"HUB_JWT_SECRET": secret})
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "42"
    assert claims["topics"] == ["news"]


def test_cli_reports_configuration_errors() -> None:
    result = run_cli("token", "--user", "1", env={"HUB_PORT": "x"})
    assert result.returncode == 2
    assert "HUB_PORT" in result.stderr


def test_cli_refuses_a_bad_user_id() -> None:
    result = run_cli("publish", "--user", "a.b", "{}", env={"HUB_AMQP_URL": "amqp://127.0.0.1:1/"})
    assert result.returncode == 2
    assert "user id" in result.stderr


def test_cli_says_when_the_hub_is_not_running() -> None:
    result = run_cli("presence", "42", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "did not answer" in result.stderr


# --- safe defaults: development credentials only on loopback, the demo only with them


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.8.7", "::1", "localhost", "LOCALHOST", "::ffff:127.0.0.1"])
def test_development_credentials_are_fine_on_loopback(host: str) -> None:
    assert Settings.from_env({"HUB_HOST": host}).dev_defaults == ("HUB_JWT_SECRET", "HUB_API_KEY")


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "", "10.1.2.3", "192.168.0.1", "hub.example.com", "127.0.0.1.nip.io"]
)
@pytest.mark.parametrize(
    "env",
    [{}, {"HUB_JWT_SECRET": "s" * 32}, {"HUB_API_KEY": "k" * 24}],
    ids=["no-credentials", "only-secret", "only-key"],
)
def test_development_credentials_are_refused_off_loopback(host: str, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        Settings.from_env(env, host=host) if host == "" else Settings.from_env({**env, "HUB_HOST": host})


def test_real_credentials_may_bind_any_address() -> None:
    settings = Settings.from_env({"HUB_HOST": "0.0.0.0", "HUB_JWT_SECRET": "s" * 32, "HUB_API_KEY": "k" * 24})
    assert settings.dev_defaults == ()
    assert not settings.demo_enabled


@pytest.mark.parametrize(
    ("env", "demo"),
    [
        ({}, True),
        ({"HUB_JWT_SECRET": "s" * 32}, False),  # /demo/token would sign with the real secret
        ({"HUB_API_KEY": "k" * 24}, False),  # /demo/publish would bypass the real key
        ({"HUB_JWT_SECRET": "s" * 32, "HUB_API_KEY": "k" * 24}, False),
        ({"HUB_JWT_SECRET": "s" * 32, "HUB_API_KEY": "k" * 24, "HUB_DEMO": "1"}, True),
        ({"HUB_DEMO": "0"}, False),
    ],
)
def test_the_demo_is_on_only_with_development_credentials(env: dict[str, str], demo: bool) -> None:
    assert Settings.from_env(env).demo_enabled is demo


def test_the_demo_is_on_regardless_of_backend_when_asked() -> None:
    env = {"HUB_AMQP_URL": "amqp://x", "HUB_REDIS_URL": "redis://x", "HUB_JWT_SECRET": "s" * 32, "HUB_API_KEY": "k"}
    assert not Settings.from_env(env).demo_enabled
    assert Settings.from_env({**env, "HUB_DEMO": "1"}).demo_enabled


def test_the_demo_needs_a_secret_to_mint_with() -> None:
    with pytest.raises(ConfigError, match="HUB_DEMO"):
        Settings.from_env({"HUB_JWT_PUBLIC_KEY": "/k.pem", "HUB_API_KEY": "k", "HUB_DEMO": "1"})


def test_client_commands_read_only_what_they_use() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"HUB_AMQP_URL": "amqp://x"})
    assert Settings.from_env({"HUB_AMQP_URL": "amqp://x"}, serving=False).amqp_url == "amqp://x"
    distributed = {"HUB_AMQP_URL": "amqp://x", "HUB_REDIS_URL": "redis://x", "HUB_JWT_SECRET": "s" * 32}
    settings = Settings.from_env(distributed, serving=False)  # no HUB_API_KEY: fine for `hub token`
    assert settings.api_key is None
    assert settings.dev_defaults == ()
    with pytest.raises(ConfigError, match="HUB_PORT"):
        Settings.from_env({"HUB_PORT": "x"}, serving=False)  # each value is still checked


def test_the_client_url() -> None:
    assert Settings.from_env({}).client_url == "http://127.0.0.1:8080"
    assert Settings.from_env({"HUB_PORT": "9000"}).client_url == "http://127.0.0.1:9000"
    assert Settings.from_env({"HUB_URL": "https://hub.example/"}).client_url == "https://hub.example"


# --- one documented table


def test_every_setting_is_documented_next_to_its_field() -> None:
    names = {f.name for f in dataclasses.fields(Settings)} - {"dev_defaults"}
    assert {f.name for f in documented_fields()} == names
    table = config_table()
    for name in names:
        assert f"| `HUB_{name.upper()}` |" in table


def test_the_readme_shows_the_generated_table() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert config_table() in readme, "README.md's configuration table differs from `hub config`: paste its output"


def test_the_effective_table_masks_secrets() -> None:
    env = {
        "HUB_AMQP_URL": "amqp://hub:amqp-password@rabbit:5672/",
        "HUB_REDIS_URL": "redis://:redis-password@redis:6379/0",
        "HUB_JWT_SECRET": "jwt-secret-value-jwt-secret-value",
        "HUB_API_KEY": "api-key-value",
        "HUB_PORT": "9001",
    }
    table = effective_table(Settings.from_env(env), env)
    for secret in ("amqp-password", "redis-password", "jwt-secret-value", "api-key-value"):
        assert secret not in table
    assert "| `HUB_AMQP_URL` | `amqp://hub:***@rabbit:5672/` | environment |" in table
    assert "| `HUB_JWT_SECRET` | `***` | environment |" in table
    assert "| `HUB_PORT` | `9001` | environment |" in table
    assert "| `HUB_HISTORY_SIZE` | `1000` | default |" in table
    assert "| `HUB_DEMO` | `False` | derived |" in table
    dev = effective_table(Settings.from_env({}), {})
    assert "| `HUB_API_KEY` | `***` | development default (insecure) |" in dev
    assert "| `HUB_DEMO` | `True` | derived |" in dev


def test_cli_config_effective() -> None:
    env = {"HUB_API_KEY": "very-secret-key", "HUB_JWT_SECRET": "s" * 32, "HUB_PING_INTERVAL": "7"}
    result = run_cli("config", "--effective", env=env)
    assert result.returncode == 0, result.stderr
    assert "| `HUB_PING_INTERVAL` | `7.0` | environment |" in result.stdout
    assert "very-secret-key" not in result.stdout
    assert run_cli("config").stdout.strip() == config_table()


# --- the CLI's client commands


def test_cli_token_for_a_numeric_looking_user_is_a_string_sub() -> None:
    secret = "cli-secret-that-is-long-enough-for-hs256"
    result = run_cli("token", "--user", "0042", env={"HUB_JWT_SECRET": secret})
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "0042"
    assert Authenticator(Settings.from_env({"HUB_JWT_SECRET": secret})).verify(result.stdout.strip()).user == "0042"


def test_cli_token_with_only_a_public_key_says_what_it_needs(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = tmp_path / "public.pem"
    pem.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    result = run_cli("token", "--user", "1", env={"HUB_JWT_PUBLIC_KEY": str(pem), "HUB_API_KEY": "k"})
    assert result.returncode == 2
    assert "HUB_JWT_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_token_does_not_demand_an_api_key() -> None:
    env = {"HUB_AMQP_URL": "amqp://x", "HUB_REDIS_URL": "redis://x", "HUB_JWT_SECRET": "s" * 32}
    result = run_cli("token", "--user", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert jwt.decode(result.stdout.strip(), "s" * 32, algorithms=["HS256"])["sub"] == "1"


def test_cli_serve_refuses_development_credentials_on_a_public_address() -> None:
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "1", env={})
    assert result.returncode == 2
    assert "loopback" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_retired_variable_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({"HUB_PREFETCH": "64"})
    assert settings == Settings.from_env({})
    assert "HUB_PREFETCH is no longer used" in caplog.text
