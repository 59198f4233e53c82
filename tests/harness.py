"""The test harness, as tests import it: a re-export of the ``testkit`` package.

Real hub servers on free loopback ports, a real WebSocket client, tokens and
deadline-bounded waits live in ``testkit/`` (shared with bench/ and docker/cluster.py);
this module keeps ``from tests.harness import …`` working.
"""

from __future__ import annotations

from testkit.client import Client, Closed
from testkit.hubs import BACKENDS, WITH_HISTORY, BackendFactory, RunningHub, register_backend, run_hub, spawn_hub_serve
from testkit.net import free_port
from testkit.tokens import API_KEY, SECRET, make_token
from testkit.waiting import TIMEOUT, wait_for

__all__ = [
    "API_KEY",
    "BACKENDS",
    "SECRET",
    "TIMEOUT",
    "WITH_HISTORY",
    "BackendFactory",
    "Client",
    "Closed",
    "RunningHub",
    "free_port",
    "make_token",
    "register_backend",
    "run_hub",
    "spawn_hub_serve",
    "wait_for",
]
