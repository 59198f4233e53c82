"""Configuration: ``HUB_*`` environment variables, overridden by ``hub serve`` flags.

Every setting is documented in ``FIELDS`` below; the README's configuration table is
generated from the same text (``hub config``), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hub.topics import InvalidTopic, validate_topic

DEV_JWT_SECRET = "dev-insecure-secret-change-me-before-production"
DEV_API_KEY = "dev-insecure-api-key"


class ConfigError(ValueError):
    """A setting with a value the hub cannot use; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The hub's configuration; build it with ``Settings.from_env``."""

    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    amqp_url: str | None = None
    redis_url: str | None = None
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = 5.0
    api_key: str | None = None
    allowed_origins: tuple[str, ...] = ()
    replica_id: str = ""
    history_size: int = 1000
    history_ttl: int = 86_400
    presence_ttl: int = 30
    auth_timeout: float = 5.0
    backend_timeout: float = 3.0
    send_timeout: float = 10.0
    drain_seconds: float = 10.0
    ping_interval: float = 25.0
    max_frame_size: int = 65_536
    max_frame_rate: float = 20.0
    max_connections_per_user: int = 32
    socket_queue_size: int = 1000
    prefetch: int = 256
    ingest_max_length: int = 1_000_000
    delivery_limit: int = 5
    exchange: str = "notifications"
    live_exchange: str = "notifications.live"
    ingest_queue: str = "hub.ingest"
    dead_letter: str = "hub.dead"
    presence_exchange: str = "hub.presence"
    redis_prefix: str = "hub:"
    demo: bool | None = None
    dev_defaults: tuple[str, ...] = field(default=(), compare=False)

    @property
    def distributed(self) -> bool:
        """True when both RabbitMQ and Redis are configured."""
        return bool(self.amqp_url and self.redis_url)

    @property
    def history_enabled(self) -> bool:
        """False with ``HUB_HISTORY_SIZE=0``: at-most-once delivery, no sequencer."""
        return self.history_size > 0

    @property
    def demo_enabled(self) -> bool:
        """The demo page and its helper endpoints: on by default only in embedded mode."""
        return (not self.distributed) if self.demo is None else self.demo

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``HUB_*`` variables, apply non-None ``overrides``, check and complete the result.

        Raises ConfigError naming the variable when a value is unusable. In embedded
        mode a missing JWT secret or API key falls back to a development default
        (listed in ``dev_defaults``, to be logged loudly); in distributed mode both are
        required.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "dev_defaults":
                continue
            raw = env.get("HUB_" + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw, FIELD_TYPES[f.name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        return settings._completed()

    def _completed(self) -> Settings:
        if bool(self.amqp_url) != bool(self.redis_url):
            raise ConfigError("set both HUB_AMQP_URL and HUB_REDIS_URL (distributed) or neither (embedded)")
        for name in ("exchange", "live_exchange", "ingest_queue", "dead_letter", "presence_exchange"):
            try:
                validate_topic(getattr(self, name))
            except InvalidTopic as exc:
                raise ConfigError(f"HUB_{name.upper()}: {exc}") from None
        positive = (
            "port",
            "presence_ttl",
            "auth_timeout",
            "backend_timeout",
            "send_timeout",
            "ingest_max_length",
            "delivery_limit",
            "ping_interval",
            "max_frame_size",
            "max_frame_rate",
            "max_connections_per_user",
            "socket_queue_size",
            "prefetch",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"HUB_{name.upper()} must be positive, got {getattr(self, name)}")
        for name in ("history_size", "history_ttl", "drain_seconds", "jwt_leeway"):
            if getattr(self, name) < 0:
                raise ConfigError(f"HUB_{name.upper()} must not be negative, got {getattr(self, name)}")
        changes: dict[str, Any] = {}
        dev: list[str] = []
        if not self.jwt_secret and not self.jwt_public_key:
            if self.distributed:
                raise ConfigError("set HUB_JWT_SECRET or HUB_JWT_PUBLIC_KEY (required with the distributed backend)")
            changes["jwt_secret"] = DEV_JWT_SECRET
            dev.append("HUB_JWT_SECRET")
        if not self.api_key:
            if self.distributed:
                raise ConfigError("set HUB_API_KEY (required with the distributed backend)")
            changes["api_key"] = DEV_API_KEY
            dev.append("HUB_API_KEY")
        if not self.replica_id:
            changes["replica_id"] = f"{socket.gethostname()}:{self.port}"
        return dataclasses.replace(self, **changes, dev_defaults=tuple(dev))


FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(Settings) if f.name != "dev_defaults"}


def _convert(name: str, raw: str, kind: str) -> Any:
    var = "HUB_" + name.upper()
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool | None":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected 1/0, true/false, yes/no or on/off")
        if kind == "tuple[str, ...]":
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{var}: expected {kind}, got {raw!r} ({exc})") from None
    return raw


#: The documented meaning of every variable (``hub config`` prints it as a table).
FIELDS: dict[str, str] = {
    "host": "interface to listen on (`0.0.0.0` in containers)",
    "port": "TCP port",
    "log_level": "`debug`, `info`, `warning` or `error`",
    "amqp_url": "RabbitMQ URL; with `HUB_REDIS_URL` selects the distributed backend",
    "redis_url": "Redis URL; with `HUB_AMQP_URL` selects the distributed backend",
    "jwt_secret": "HS256 secret for tokens (embedded default: an insecure development secret)",
    "jwt_public_key": "PEM public key, or a path to one, for RS256/ES256 tokens",
    "jwt_audience": "required `aud` claim (unset: a token with any `aud` is refused)",
    "jwt_issuer": "required `iss` claim (unset: `iss` is not checked)",
    "jwt_leeway": "seconds of clock skew allowed on `exp`, `nbf` and `iat`",
    "api_key": "bearer key for `/api/` routes (embedded default: an insecure development key)",
    "allowed_origins": "comma-separated Origin allow-list for `/ws` (unset: any origin)",
    "replica_id": "this replica's id (default: `<hostname>:<port>`)",
    "history_size": "notifications kept per topic for recovery; `0` turns history off",
    "history_ttl": "seconds a notification stays in history",
    "presence_ttl": "seconds before a silent replica's connections stop counting",
    "auth_timeout": "seconds a new socket has to send its `connect` frame",
    "backend_timeout": "seconds any RabbitMQ or Redis call on a request path may take (then 1013 / 503)",
    "send_timeout": "seconds one write to a socket may take before the socket is aborted",
    "drain_seconds": "on SIGTERM, seconds over which open sockets are closed with 1012",
    "ping_interval": "seconds between `ping` frames",
    "max_frame_size": "largest client frame in bytes (larger: close 1009)",
    "max_frame_rate": "client frames per second per socket, burst of twice that (over: close 4008)",
    "max_connections_per_user": "open sockets per user across the deployment (over: close 4008)",
    "socket_queue_size": "notifications waiting per socket before it is closed with 1013",
    "prefetch": "unacknowledged notifications in flight per socket",
    "ingest_max_length": "messages `hub.ingest` holds at most (older overflow to `hub.dead`)",
    "delivery_limit": "deliveries of one ingest message before it is dead-lettered",
    "exchange": "the publishers' topic exchange",
    "live_exchange": "the sequenced-notifications exchange the sockets bind on",
    "ingest_queue": "the sequencer's durable queue",
    "dead_letter": "exchange and queue for unreadable messages",
    "presence_exchange": "topic exchange of `presence.online.<id>` / `presence.offline.<id>` events",
    "redis_prefix": "prefix of every Redis key",
    "demo": "serve `/demo/` and its token/publish helpers (default: on when embedded)",
}


def config_table() -> str:
    """The configuration as a markdown table: variable, default, meaning."""
    defaults = Settings()
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, meaning in FIELDS.items():
        value = getattr(defaults, name)
        shown = "" if value in (None, "", ()) else f"`{value}`"
        rows.append(f"| `HUB_{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(rows)
