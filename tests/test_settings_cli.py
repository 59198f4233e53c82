"""Configuration from HUB_* variables and the ``hub`` command line."""

from __future__ import annotations

import subprocess
import sys

import jwt
import pytest

from hub.settings import DEV_API_KEY, DEV_JWT_SECRET, ConfigError, Settings, config_table


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
