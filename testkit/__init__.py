"""Test support shared by ``tests/``, ``bench/`` and ``docker/cluster.py``: one copy of each helper.

- ``testkit.net``: ``free_port``, ``reachable``;
- ``testkit.tokens``: the test ``SECRET`` and ``API_KEY``, ``make_token``;
- ``testkit.waiting``: ``wait_for`` (poll with a deadline), ``TIMEOUT``;
- ``testkit.services``: private RabbitMQ vhosts and Redis key prefixes (``environment``,
  ``deployment``, ``names``, ``create_vhost``…), ``ServiceMissing``;
- ``testkit.client``: the protocol v1 test client (``Client``, ``Closed``);
- ``testkit.reconnecting``: ``ReconnectingClient``, which resumes with ``since``;
- ``testkit.hubs``: in-process replicas on every backend (``run_hub``, ``RunningHub``,
  ``BACKENDS``, ``WITH_HISTORY``, ``register_backend``).

Not part of the hub's distribution (the wheel ships ``hub`` only); importable from the
repository root, which pytest puts on ``sys.path`` (``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

from testkit.client import Client, Closed
from testkit.hubs import BACKENDS, WITH_HISTORY, RunningHub, register_backend, run_hub
from testkit.net import free_port, reachable
from testkit.reconnecting import ReconnectingClient
from testkit.services import ServiceMissing, deployment, environment
from testkit.tokens import API_KEY, SECRET, make_token
from testkit.waiting import TIMEOUT, wait_for

__all__ = [
    "API_KEY",
    "BACKENDS",
    "SECRET",
    "TIMEOUT",
    "WITH_HISTORY",
    "Client",
    "Closed",
    "ReconnectingClient",
    "RunningHub",
    "ServiceMissing",
    "deployment",
    "environment",
    "free_port",
    "make_token",
    "reachable",
    "register_backend",
    "run_hub",
    "wait_for",
]
