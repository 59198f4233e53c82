"""Isolated RabbitMQ + Redis environments for tests of the distributed backend.

A re-export of ``testkit.services`` (one private vhost per test process, one Redis key
prefix and set of exchange/queue names per hub environment), so that
``from tests.distributed_env import environment`` keeps working.
"""

from __future__ import annotations

from testkit import services
from testkit.services import AMQP_HOST, AMQP_PORT, REDIS_URL, drop_redis_keys, environment, names, process_vhost


def vhost() -> str:
    """This process's RabbitMQ vhost (``testkit.services.process_vhost``)."""
    return process_vhost()


def amqp_url() -> str:
    """The AMQP URL of this process's test vhost."""
    return services.amqp_url(process_vhost())


__all__ = [
    "AMQP_HOST",
    "AMQP_PORT",
    "REDIS_URL",
    "amqp_url",
    "drop_redis_keys",
    "environment",
    "names",
    "vhost",
]
