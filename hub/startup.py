"""Starting a replica: one deadline, one clear line when it cannot (docs/protocol.md §7).

``start_node`` starts the backend within ``HUB_STARTUP_TIMEOUT`` and turns any failure into
``StartupError``, whose message is one line naming the services (URLs without their
passwords). ``hub serve`` prints it as ``hub: cannot start: <message>`` and exits 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final
from urllib.parse import unquote, urlsplit

from hub.backends.base import BackendUnavailable
from hub.node import Node
from hub.settings import Settings, redact_url

log = logging.getLogger("hub.startup")

#: Libraries that log every failed connection attempt; start-up reports the outcome instead.
CHATTY_LIBRARIES: Final = ("aiormq", "aio_pika", "redis")


class StartupError(Exception):
    """The replica cannot start; the message is one line, without passwords."""


async def start_node(node: Node) -> None:
    """Start ``node`` (its backend) within ``HUB_STARTUP_TIMEOUT``; raise StartupError otherwise.

    After a failure the half-started backend is closed (within the same deadline,
    errors ignored), so the caller can exit cleanly.
    """
    settings = node.settings
    if settings.demo_enabled and settings.demo:
        log.warning(
            "HUB_DEMO=1: /demo/token signs tokens for any user and /demo/publish needs no API key; "
            "never expose this replica"
        )
    limit = settings.startup_timeout
    try:
        async with asyncio.timeout(limit):
            await node.start()
        log.info("using %s", describe_services(node))
        return
    except BackendUnavailable as exc:
        reason = str(exc)
    except TimeoutError:
        reason = f"{_services(settings)} did not answer within {limit:g} s (HUB_STARTUP_TIMEOUT)"
    except OSError as exc:
        reason = f"{_services(settings)}: {exc.strerror or exc}"
    except Exception as exc:  # a library's own error type: still one line, the traceback at debug level
        log.debug("backend start failed", exc_info=True)
        reason = f"{_services(settings)}: {type(exc).__name__}: {exc}"
    with contextlib.suppress(Exception):
        async with asyncio.timeout(settings.backend_timeout):
            await node.close()
    raise StartupError(scrub(reason, settings))


def scrub(message: str, settings: Settings) -> str:
    """``message`` on one line, with every configured URL's password replaced by ``***``."""
    for url in (settings.amqp_url, settings.redis_url):
        if not url:
            continue
        message = message.replace(url, redact_url(url))
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            for secret in (password, unquote(password)):
                message = message.replace(secret, "***")
    return " ".join(message.split())


def quiet_libraries(settings: Settings) -> Callable[[], None]:
    """Silence the connection chatter of ``CHATTY_LIBRARIES`` (unless ``HUB_LOG_LEVEL=debug``);
    return the function that restores their levels.

    For a process running one replica (``hub serve``): levels are process-wide. After a
    failed start, leave them quiet: the process exits with its one line.
    """
    if settings.log_level == "debug":
        return lambda: None
    loggers = [logging.getLogger(name) for name in CHATTY_LIBRARIES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)

    def restore() -> None:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

    return restore


def describe_services(node: Node) -> str:
    """Which broker node, vhost, Redis and key prefix this replica uses (no passwords), for the
    start-up log: the first thing to check when two replicas disagree."""
    settings = node.settings
    if not (settings.amqp_url and settings.redis_url):
        return "the embedded backend (in-process broker, presence and history)"
    amqp = urlsplit(settings.amqp_url.split(",")[0])  # a cluster's nodes share the vhost
    vhost = unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
    broker = "RabbitMQ (not connected)"
    connection = getattr(node.backend, "connection", None)
    try:
        server = connection.transport.connection.server_properties  # type: ignore[union-attr]
        broker = f"RabbitMQ {server.get('version', '?')} (cluster {server.get('cluster_name', '?')})"
    except AttributeError:
        pass
    history = f"history {settings.history_size} per topic" if settings.history_enabled else "history off"
    redis = f"Redis at {redact_url(settings.redis_url)}"
    if settings.redis_sentinels:
        redis = f"Redis primary {settings.redis_master!r} of the Sentinels at {settings.redis_sentinels}"
    return (
        f"{broker} at {redact_url(settings.amqp_url)} (vhost {vhost!r}); "
        f"{redis} (key prefix {settings.redis_prefix!r}); {history}"
    )


def _services(settings: Settings) -> str:
    if settings.amqp_url and settings.redis_url:
        return f"RabbitMQ ({redact_url(settings.amqp_url)}) or Redis ({redact_url(settings.redis_url)})"
    return "the embedded backend"
