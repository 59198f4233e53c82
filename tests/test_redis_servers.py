"""Private redis-server processes (testkit.redis_server): a first start whose port was taken
after ``free_port`` chose it moves to new ports instead of failing the run."""

from __future__ import annotations

import socket

from testkit.redis_server import RedisGroup


def test_a_port_taken_since_it_was_chosen_is_replaced() -> None:
    group = RedisGroup("ports")
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            server = group.add("node", ["cluster-enabled yes", f"cluster-port {busy}"])
            server.start()
            assert server.alive
            assert f"cluster-port {busy}" not in server.config  # the bus port it could not bind
            assert server.cli("PING").strip() == "PONG"
    finally:
        group.close()
