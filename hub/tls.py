"""TLS to RabbitMQ (``amqps://``) and Redis (``rediss://``), and for ``hub serve`` itself.

The URL's scheme turns TLS on; the settings say whom to trust and who we are:
``HUB_AMQP_CA_FILE`` / ``HUB_REDIS_CA_FILE`` (the CA the server's certificate must chain
to; default: the system's CAs), ``HUB_AMQP_CERT_FILE`` + ``HUB_AMQP_KEY_FILE`` (and the
Redis twins) for servers that require a client certificate. The server's certificate is
always verified, host name included: a certificate that does not chain to the CA, or
names another host, fails the handshake (start-up then fails with the reason, exit 3).
``HUB_TLS_CERT_FILE`` + ``HUB_TLS_KEY_FILE`` make ``hub serve`` answer ``https://`` and
``wss://`` itself (usually the load balancer terminates TLS instead).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from hub.settings import Settings


def _client_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def amqp_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client context for an ``amqps://`` ``HUB_AMQP_URL`` (None for ``amqp://``)."""
    if not settings.amqp_url or urlsplit(settings.amqp_url).scheme != "amqps":
        return None
    return _client_context(settings.amqp_ca_file, settings.amqp_cert_file, settings.amqp_key_file)


def redis_ssl_options(settings: Settings) -> dict[str, Any]:
    """redis-py's keyword arguments for a ``rediss://`` ``HUB_REDIS_URL`` (empty for ``redis://``)."""
    if not settings.redis_url or urlsplit(settings.redis_url).scheme != "rediss":
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.redis_ca_file:
        options["ssl_ca_certs"] = settings.redis_ca_file
    if settings.redis_cert_file:
        options["ssl_certfile"] = settings.redis_cert_file
        options["ssl_keyfile"] = settings.redis_key_file or None
    return options


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's keyword arguments when ``hub serve`` terminates TLS (empty otherwise)."""
    if not settings.tls_cert_file:
        return {}
    return {"ssl_certfile": settings.tls_cert_file, "ssl_keyfile": settings.tls_key_file}
