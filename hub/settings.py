"""Configuration: ``HUB_*`` environment variables, overridden by ``hub serve`` flags.

Every setting is documented next to its field (``metadata["doc"]``); ``hub config``
prints that text as the README's configuration table, and ``hub config --effective``
the values in force. Everything downstream takes ``Settings`` (or explicit values):
nothing else reads ``HUB_*`` from the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from hub.topics import InvalidTopic, validate_topic
from hubnotify.message import EXCHANGE
from hubnotify.presence import DEFAULT_PREFIX

log = logging.getLogger("hub.settings")

DEV_JWT_SECRET = "dev-insecure-secret-change-me-before-production"
DEV_API_KEY = "dev-insecure-api-key"


#: Variables an earlier version read, and why they are ignored now (a warning when set).
RETIRED: Final = {
    "HUB_PREFETCH": "socket queues are consumed without acknowledgements; HUB_SOCKET_QUEUE_SIZE bounds a socket",
}


class ConfigError(ValueError):
    """A setting with a value the hub cannot use; the message names the variable."""


def _setting(default: Any, doc: str, *, secret: bool = False, url: bool = False) -> Any:
    """A field with its documentation; ``secret`` and ``url`` say how ``hub config --effective`` masks it."""
    return field(default=default, metadata={"doc": doc, "secret": secret, "url": url})


@dataclass(frozen=True, slots=True)
class Settings:
    """The hub's configuration; build it with ``Settings.from_env``."""

    host: str = _setting("127.0.0.1", "interface to listen on (`0.0.0.0` in containers; needs real credentials)")
    port: int = _setting(8080, "TCP port")
    log_level: str = _setting("info", "`debug`, `info`, `warning` or `error`")
    log_format: str = _setting(
        "plain",
        "`plain` (lines for a terminal) or `json` (one object per line: time, level, logger, message, "
        "replica, and conn_id/user for a socket's lines)",
    )
    event_loop: str = _setting(
        "asyncio",
        "the event loop of `hub serve`: `asyncio` (its own), `uvloop` (needs the `uvloop` package) or `auto` "
        "(uvloop when installed); uvloop did not measure cheaper here (docs/benchmarks.md)",
    )
    amqp_url: str | None = _setting(
        None,
        "RabbitMQ URL, or a cluster's node URLs separated by commas (the hub fails over between them); "
        "with `HUB_REDIS_URL` selects the distributed backend",
        url=True,
    )
    redis_url: str | None = _setting(
        None,
        "Redis URL; with `HUB_AMQP_URL` selects the distributed backend. A Redis Cluster: "
        "`redis+cluster://[user:password@]host:port,host:port` (any reachable nodes)",
        url=True,
    )
    redis_sentinels: str | None = _setting(
        None,
        "`host:port,host:port`: Sentinels watching the Redis primary `HUB_REDIS_MASTER`; the hub connects to "
        "the primary they name and follows a failover (`HUB_REDIS_URL` then gives only password, database and TLS)",
    )
    redis_master: str | None = _setting(None, "with `HUB_REDIS_SENTINELS`: the primary's name in the Sentinels")
    amqp_ca_file: str | None = _setting(
        None, "with `amqps://`: PEM file of the CA RabbitMQ's certificate must chain to (default: the system's CAs)"
    )
    amqp_cert_file: str | None = _setting(
        None, "with `amqps://`: PEM client certificate, for a RabbitMQ that requires one (`fail_if_no_peer_cert`)"
    )
    amqp_key_file: str | None = _setting(
        None, "the client certificate's private key (PEM; default: in the certificate file)"
    )
    redis_ca_file: str | None = _setting(
        None, "with `rediss://`: PEM file of the CA Redis' certificate must chain to (default: the system's CAs)"
    )
    redis_cert_file: str | None = _setting(
        None, "with `rediss://`: PEM client certificate, for a Redis with `tls-auth-clients yes`"
    )
    redis_key_file: str | None = _setting(None, "the Redis client certificate's private key (PEM)")
    tls_cert_file: str | None = _setting(
        None,
        "PEM certificate (chain) for `hub serve` to answer `https://` and `wss://` itself (with `HUB_TLS_KEY_FILE`)",
    )
    tls_key_file: str | None = _setting(None, "the private key of `HUB_TLS_CERT_FILE` (PEM)")
    jwt_secret: str | None = _setting(
        None, "HS256 secret for tokens (embedded default: an insecure development secret)", secret=True
    )
    jwt_public_key: str | None = _setting(None, "PEM public key, or a path to one, for RS256 (RSA) or ES256 (P-256)")
    jwt_audience: str | None = _setting(None, "required `aud` claim (unset: a token with any `aud` is refused)")
    jwt_issuer: str | None = _setting(None, "required `iss` claim (unset: `iss` is not checked)")
    jwt_leeway: float = _setting(5.0, "seconds of clock skew allowed on `exp`, `nbf` and `iat`")
    api_key: str | None = _setting(
        None, "bearer key for `/api/` routes (embedded default: an insecure development key)", secret=True
    )
    allowed_origins: tuple[str, ...] = _setting((), "comma-separated Origin allow-list for `/ws` (unset: any origin)")
    replica_id: str = _setting("", "this replica's id (default: `<hostname>:<port>`)")
    history_size: int = _setting(1000, "notifications kept per topic for recovery; `0` turns history off")
    history_ttl: int = _setting(86_400, "seconds a notification stays in history")
    presence_ttl: int = _setting(30, "seconds before a silent replica's connections stop counting")
    auth_timeout: float = _setting(5.0, "seconds a new socket has to send its `connect` frame")
    backend_timeout: float = _setting(
        3.0, "seconds any RabbitMQ or Redis call on a request path may take (then 1013 / 503)"
    )
    startup_timeout: float = _setting(
        15.0,
        "seconds a replica may take at start to reach RabbitMQ and Redis and declare its queues "
        "(then it exits with status 3); a cluster electing leaders can need more than one call's deadline",
    )
    send_timeout: float = _setting(10.0, "seconds one write to a socket may take before the socket is aborted")
    connect_concurrency: int = _setting(
        64,
        "connects that take their presence entry and live queue at once; more wait their turn, at most "
        "`HUB_AUTH_TIMEOUT` seconds (then 1013), so a burst queues instead of timing out together",
    )
    drain_seconds: float = _setting(10.0, "on SIGTERM, seconds over which open sockets are closed with 1012")
    ping_interval: float = _setting(25.0, "seconds between `ping` frames")
    max_frame_size: int = _setting(65_536, "largest client frame in bytes (larger: close 1009)")
    max_frame_rate: float = _setting(
        20.0, "client frames per second per socket, burst of twice that (over: close 4008)"
    )
    max_connections_per_user: int = _setting(32, "open sockets per user across the deployment (over: close 4008)")
    socket_queue_size: int = _setting(1000, "notifications waiting per socket before it is closed with 1013")
    spare_queues: int = _setting(
        10_000,
        "closed sockets' RabbitMQ queues a replica keeps, up to 30 s, for the next sockets: the same user "
        "reconnecting takes its queue back at no cost to the broker, another user rebinds one instead of "
        "declaring a queue; `0`: every queue is deleted with its socket (docs/protocol.md §5)",
    )
    sse_ticket_ttl: float = _setting(
        30.0, "seconds an SSE ticket (`POST /sse/ticket`) stays valid; it is single-use (docs/protocol.md §10)"
    )
    ingest_max_length: int = _setting(1_000_000, "messages `hub.ingest` holds at most (older overflow to `hub.dead`)")
    ingest_max_priority: int = _setting(
        9,
        "`x-max-priority` of `hub.ingest`: publishes with a higher AMQP priority (0-9) overtake a backlog; "
        "`0`: a classic queue (priorities ignored). Fixed when the queue is created (docs/operations.md §5)",
    )
    ingest_queue_type: str = _setting(
        "classic",
        "`classic` or `quorum`: the type of `hub.ingest`; a quorum queue survives the loss of a RabbitMQ "
        "cluster node, and needs `HUB_INGEST_MAX_PRIORITY=0` (RabbitMQ 3.10 has no quorum priorities). "
        "Fixed when the queue is created (docs/operations.md, RabbitMQ cluster)",
    )
    broker_outage_close: float = _setting(
        10.0,
        "seconds open sockets wait while no RabbitMQ node is reachable; then they are closed with 1013 "
        "(the client reconnects and resumes)",
    )
    sequencer_linger: float = _setting(
        0.0,
        "seconds the sequencer waits, once a notification is in, for more to join its batch: fewer, larger "
        "batches (less CPU per notification) for that much more latency; `0`: no wait (docs/operations.md §2)",
    )
    delivery_limit: int = _setting(5, "deliveries of one ingest message before it is dead-lettered")
    exchange: str = _setting(EXCHANGE, "the publishers' topic exchange")
    live_exchange: str = _setting("notifications.live", "the sequenced-notifications exchange the sockets bind on")
    ingest_queue: str = _setting("hub.ingest", "the sequencer's durable queue")
    ingest_shards: int = _setting(
        1,
        "ingest queues the notifications are split over by a hash of the topic (`1`: one `hub.ingest`); "
        "more than 1 needs RabbitMQ's `rabbitmq_consistent_hash_exchange` plugin "
        "(docs/operations.md, Sharded sequencing)",
    )
    shard_lease: float = _setting(
        3.0,
        "seconds a replica's claim on its ingest shards lasts after its last renewal (renewed every third of "
        "it): how long a killed replica's shards wait before others take them",
    )
    dead_letter: str = _setting("hub.dead", "exchange and queue for unreadable messages")
    presence_exchange: str = _setting(
        "hub.presence", "topic exchange of `presence.online.<id>` / `presence.offline.<id>` events"
    )
    redis_prefix: str = _setting(DEFAULT_PREFIX, "prefix of every Redis key")
    demo: bool | None = _setting(
        None, "serve `/demo/` and its token/publish helpers (default: on only with development credentials)"
    )
    url: str | None = _setting(
        None,
        "base URL of the hub `hub publish` and `hub presence` call over HTTP (default: `http://127.0.0.1:<HUB_PORT>`)",
        url=True,
    )
    #: The variables that fell back to an insecure development default (logged loudly).
    dev_defaults: tuple[str, ...] = field(default=(), compare=False)

    @property
    def distributed(self) -> bool:
        """True when both RabbitMQ and Redis are configured."""
        return bool(self.amqp_url and self.redis_url)

    @property
    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        """``HUB_REDIS_SENTINELS`` as ``(host, port)`` pairs (empty without Sentinels)."""
        if not self.redis_sentinels:
            return ()
        pairs = []
        for item in self.redis_sentinels.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"HUB_REDIS_SENTINELS: expected host:port[,host:port…], got {item.strip()!r}")
            pairs.append((host.strip("[]"), int(port)))
        return tuple(pairs)

    @property
    def history_enabled(self) -> bool:
        """False with ``HUB_HISTORY_SIZE=0``: at-most-once delivery, no sequencer."""
        return self.history_size > 0

    @property
    def demo_enabled(self) -> bool:
        """The demo page and its helper endpoints (``/demo/token`` mints tokens with the
        secret, ``/demo/publish`` needs no key): on by default only while both the JWT
        secret and the API key are development defaults, since either route would
        otherwise give away a real credential; ``HUB_DEMO`` decides explicitly."""
        if self.demo is not None:
            return self.demo
        return {"HUB_JWT_SECRET", "HUB_API_KEY"} <= set(self.dev_defaults)

    @property
    def client_url(self) -> str:
        """The base URL the CLI's HTTP commands use: ``HUB_URL``, else this host's port on loopback."""
        return (self.url or f"http://127.0.0.1:{self.port}").rstrip("/")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, serving: bool = True, **overrides: Any) -> Settings:
        """Read ``HUB_*`` variables, apply non-None ``overrides``, check and complete the result.

        Raises ConfigError naming the variable when a value is unusable. Without RabbitMQ
        and Redis, a missing JWT secret or API key falls back to a development default
        (listed in ``dev_defaults``, to be logged loudly). With ``serving`` (a replica
        about to run) the rules of a running hub apply too: both URLs or neither, real
        credentials with the distributed backend and on any non-loopback address. The
        CLI's client commands pass ``serving=False``: they check only what they use.
        """
        env = os.environ if environ is None else environ
        for name, why in RETIRED.items():
            if env.get(name):
                log.warning("%s is no longer used and is ignored: %s", name, why)
        values: dict[str, Any] = {}
        for f in documented_fields():
            raw = env.get(env_name(f.name))
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw, str(f.type))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)._completed(serving)

    def _completed(self, serving: bool) -> Settings:
        if serving and bool(self.amqp_url) != bool(self.redis_url):
            raise ConfigError("set both HUB_AMQP_URL and HUB_REDIS_URL (distributed) or neither (embedded)")
        self._check_values()
        changes: dict[str, Any] = {}
        dev: list[str] = []
        embedded = not (self.amqp_url or self.redis_url)
        if not self.jwt_secret and not self.jwt_public_key:
            if embedded:
                changes["jwt_secret"] = DEV_JWT_SECRET
                dev.append("HUB_JWT_SECRET")
            elif serving:
                raise ConfigError("set HUB_JWT_SECRET or HUB_JWT_PUBLIC_KEY (required with the distributed backend)")
        if not self.api_key:
            if embedded:
                changes["api_key"] = DEV_API_KEY
                dev.append("HUB_API_KEY")
            elif serving:
                raise ConfigError("set HUB_API_KEY (required with the distributed backend)")
        if serving and dev and not is_loopback(self.host):
            raise ConfigError(
                f"{' and '.join(dev)} unset: development credentials are refused on HUB_HOST={self.host!r}, "
                "which is not a loopback address; set HUB_JWT_SECRET (or HUB_JWT_PUBLIC_KEY) and HUB_API_KEY"
            )
        if serving and self.demo and not (self.jwt_secret or changes.get("jwt_secret")):
            raise ConfigError("HUB_DEMO=1 needs HUB_JWT_SECRET: the demo page mints HS256 tokens")
        if not self.replica_id:
            changes["replica_id"] = f"{socket.gethostname()}:{self.port}"
        return dataclasses.replace(self, **changes, dev_defaults=tuple(dev))

    def _check_values(self) -> None:
        _tls_checks(self)
        _redis_checks(self)
        if self.log_format not in ("plain", "json"):
            raise ConfigError(f"HUB_LOG_FORMAT: expected `plain` or `json`, got {self.log_format!r}")
        if self.event_loop not in ("auto", "uvloop", "asyncio"):
            raise ConfigError(f"HUB_EVENT_LOOP: expected `auto`, `uvloop` or `asyncio`, got {self.event_loop!r}")
        for name in ("exchange", "live_exchange", "ingest_queue", "dead_letter", "presence_exchange"):
            try:
                validate_topic(getattr(self, name))
            except InvalidTopic as exc:
                raise ConfigError(f"{env_name(name)}: {exc}") from None
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{env_name(name)} must be positive, got {getattr(self, name)}")
        if not 0 <= self.sequencer_linger <= 1:
            raise ConfigError(f"HUB_SEQUENCER_LINGER: expected 0 to 1 (seconds), got {self.sequencer_linger}")
        if not 0 <= self.ingest_max_priority <= 9:
            raise ConfigError(f"HUB_INGEST_MAX_PRIORITY: expected 0 to 9, got {self.ingest_max_priority}")
        if self.ingest_queue_type not in ("classic", "quorum"):
            raise ConfigError(f"HUB_INGEST_QUEUE_TYPE: expected `classic` or `quorum`, got {self.ingest_queue_type!r}")
        if self.ingest_queue_type == "quorum" and self.ingest_max_priority > 0:
            raise ConfigError(
                "HUB_INGEST_QUEUE_TYPE=quorum needs HUB_INGEST_MAX_PRIORITY=0: quorum queues on RabbitMQ 3.10 "
                f"have no priorities (x-max-priority), got HUB_INGEST_MAX_PRIORITY={self.ingest_max_priority}"
            )
        for name in ("history_size", "history_ttl", "drain_seconds", "jwt_leeway", "spare_queues"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{env_name(name)} must not be negative, got {getattr(self, name)}")


_TLS_FILES: Final = {
    "amqp": ("amqp_ca_file", "amqp_cert_file", "amqp_key_file"),
    "redis": ("redis_ca_file", "redis_cert_file", "redis_key_file"),
    "serve": ("tls_cert_file", "tls_key_file"),
}
_TLS_SCHEMES: Final = {"amqp": ("amqp_url", "amqps"), "redis": ("redis_url", "rediss")}


def _tls_checks(settings: Settings) -> None:
    """Every TLS file named exists; client certificate files come with a TLS URL; a key
    comes with its certificate."""
    for group, names in _TLS_FILES.items():
        for name in names:
            path = getattr(settings, name)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{env_name(name)}: expected a readable PEM file, {path!r} is not a file")
        if group in _TLS_SCHEMES:
            url_field, scheme = _TLS_SCHEMES[group]
            url = getattr(settings, url_field)
            used = [env_name(n) for n in names if getattr(settings, n)]
            if used and url and urlsplit(url).scheme != scheme:
                raise ConfigError(f"{', '.join(used)} set, but {env_name(url_field)} is not a {scheme}:// URL")
        certificate, key = names[-2], names[-1]
        if getattr(settings, key) and not getattr(settings, certificate):
            raise ConfigError(f"{env_name(key)} set without {env_name(certificate)}")
    if settings.tls_key_file and not settings.tls_cert_file:
        raise ConfigError("HUB_TLS_KEY_FILE set without HUB_TLS_CERT_FILE")


def _redis_checks(settings: Settings) -> None:
    """A cluster URL or Sentinels, not both; Sentinels come with the primary's name."""
    scheme = urlsplit(settings.redis_url).scheme if settings.redis_url else ""
    if scheme == "rediss+cluster":
        raise ConfigError("HUB_REDIS_URL: TLS to a Redis Cluster (rediss+cluster://) is not supported yet")
    if settings.sentinel_addresses:
        if not settings.redis_master:
            raise ConfigError("HUB_REDIS_SENTINELS set without HUB_REDIS_MASTER (the primary's name)")
        if scheme == "redis+cluster":
            raise ConfigError("HUB_REDIS_SENTINELS and a redis+cluster:// HUB_REDIS_URL exclude each other")
    elif settings.redis_master:
        raise ConfigError("HUB_REDIS_MASTER set without HUB_REDIS_SENTINELS")


_POSITIVE = (
    "port",
    "presence_ttl",
    "auth_timeout",
    "backend_timeout",
    "startup_timeout",
    "send_timeout",
    "connect_concurrency",
    "ingest_max_length",
    "delivery_limit",
    "ingest_shards",
    "shard_lease",
    "broker_outage_close",
    "ping_interval",
    "max_frame_size",
    "max_frame_rate",
    "max_connections_per_user",
    "socket_queue_size",
    "sse_ticket_ttl",
)

#: The documented defaults, for helpers taking explicit values (one copy of each default).
DEFAULTS: Final = Settings()


def documented_fields() -> list[dataclasses.Field[Any]]:
    """Every field that is a ``HUB_*`` variable, in declaration order."""
    return [f for f in dataclasses.fields(Settings) if "doc" in f.metadata]


def env_name(name: str) -> str:
    """The environment variable of field ``name`` (``amqp_url`` → ``HUB_AMQP_URL``)."""
    return "HUB_" + name.upper()


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: addresses only this machine reaches."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages); each of
    several comma-separated URLs (a RabbitMQ cluster's nodes)."""
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "<unreadable URL>"


def _convert(name: str, raw: str, kind: str) -> Any:
    var = env_name(name)
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


def config_table() -> str:
    """The configuration as a markdown table: variable, default, meaning (the README's table)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in documented_fields():
        value = getattr(DEFAULTS, f.name)
        shown = "" if value in (None, "", ()) else f"`{value}`"
        rows.append(f"| `{env_name(f.name)}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)


def effective_table(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The values ``settings`` holds and where each came from, as a markdown table.

    Secrets are masked and URL passwords replaced; ``environ`` (default: the process
    environment) tells values set there from defaults.
    """
    env = os.environ if environ is None else environ
    rows = ["| variable | value | from |", "|---|---|---|"]
    for f in documented_fields():
        var, value = env_name(f.name), getattr(settings, f.name)
        if f.name in _RESOLVED:  # show what is in force, not "unset"
            value = getattr(settings, _RESOLVED[f.name])
        if var in settings.dev_defaults:
            source = "development default (insecure)"
        elif env.get(var):
            source = "environment"
        elif value != f.default:
            source = "derived"
        else:
            source = "default"
        rows.append(f"| `{var}` | {_shown(f, value)} | {source} |")
    return "\n".join(rows)


#: Fields whose unset value means "decided elsewhere" → the property that decides.
_RESOLVED: Final = {"demo": "demo_enabled", "url": "client_url"}


def _shown(f: dataclasses.Field[Any], value: Any) -> str:
    if value is None or value in ("", ()):
        return ""
    if f.metadata["secret"]:
        return "`***`"
    if f.metadata["url"]:
        return f"`{redact_url(value)}`"
    if isinstance(value, tuple):
        return "`" + ",".join(value) + "`"
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return f"PEM, {len(value)} characters"
    return f"`{value}`"
