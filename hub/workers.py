"""``hub serve --workers N``: N replica processes sharing one port (distributed backend only).

Each worker is a full replica with its own id (``<replica>-w<i>``) binding the port with
``SO_REUSEPORT``, so the kernel spreads new connections over them and a 2-core machine
uses both cores. The parent only forwards SIGTERM/SIGINT (each worker then drains as a
single replica does) and exits with the worst exit status once every worker is gone.
It does not restart a worker that dies: that is the process manager's or the
orchestrator's job, and the other workers keep serving meanwhile.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from types import FrameType

from hub.settings import ConfigError, Settings


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port`` (an IPv6 one for an IPv6 address or name);
    with ``reuse_port`` sibling workers can bind the same port. Raises OSError."""
    family, _, _, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def run_workers(settings: Settings, workers: int, serve_args: list[str]) -> int:
    """Start ``workers`` ``hub serve`` processes and wait for all of them; return the exit status."""
    if not settings.distributed:
        raise ConfigError(
            "--workers > 1 needs the distributed backend (HUB_AMQP_URL and HUB_REDIS_URL): "
            "embedded state is per process"
        )
    children: list[subprocess.Popen[bytes]] = []
    for i in range(workers):
        env = {**os.environ, "HUB_REPLICA_ID": f"{settings.replica_id}-w{i}"}
        command = [sys.executable, "-m", "hub", "serve", *serve_args, "--reuse-port"]
        children.append(subprocess.Popen(command, env=env))

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(child.wait() for child in children)
