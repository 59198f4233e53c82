"""Private RabbitMQ nodes for tests and benchmarks that need what the shared broker must not get.

The shared node (127.0.0.1:5672) is never reconfigured: no plugin is enabled on it and no
listener is added. Tests that need a federation plugin, a TLS listener or a second site
start their own nodes here: loopback ports of their own, their own node name, data and
log directories under a temporary directory, and an Erlang cookie of their own (in a
private ``HOME``), so that their ``rabbitmqctl`` can never reach the shared node by
mistake. Nodes run in the foreground as our children and are stopped by ``stop``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from testkit.net import free_port
from testkit.services import ServiceMissing

#: The Debian package's scripts; /usr/sbin's wrappers would switch to the rabbitmq user.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 90.0


def _credentials(user: str, password: str) -> str:
    return f"{quote(user, safe='')}:{quote(password, safe='')}"


@dataclass
class Tls:
    """A TLS listener: the node's certificate and key, and the CA its clients must chain to."""

    ca: Path
    cert: Path
    key: Path
    require_client_cert: bool = True


@dataclass
class RabbitNode:
    """One private RabbitMQ node; see the module docstring."""

    name: str
    base: Path
    amqp_port: int
    dist_port: int
    tls_port: int | None = None
    plugins: tuple[str, ...] = ()
    #: The rabbitmq_prometheus listener (when that plugin is enabled).
    prometheus_port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    @property
    def home(self) -> Path:
        return self.base / "home"

    def env(self) -> dict[str, str]:
        base = self.base
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "node.pid"),
        }

    def amqp_url(self, user: str = "guest", password: str = "guest", vhost: str = "/") -> str:
        return f"amqp://{_credentials(user, password)}@127.0.0.1:{self.amqp_port}/{quote(vhost, safe='')}"

    def amqps_url(self, user: str = "guest", password: str = "guest", vhost: str = "/") -> str:
        """The TLS listener's URL; the host is ``localhost``, the name its certificate holds."""
        assert self.tls_port is not None, "expected a node started with a TLS listener"
        return f"amqps://{_credentials(user, password)}@localhost:{self.tls_port}/{quote(vhost, safe='')}"

    def ctl(self, *args: str, check: bool = True) -> str:
        """Run ``rabbitmqctl`` against this node; return its standard output."""
        result = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {self.node} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace')[-500:]}"
            )
        return result.stdout.decode()

    def write_config(self, tls: Tls | None) -> None:
        base = self.base
        for sub in ("home", "mnesia", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(uuid.uuid4().hex.upper())
            cookie.chmod(0o400)
        lines = [f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}", "log.console = false"]
        if tls is not None:
            assert self.tls_port is not None
            lines += [
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {tls.ca}",
                f"ssl_options.certfile = {tls.cert}",
                f"ssl_options.keyfile = {tls.key}",
                "ssl_options.verify = verify_peer",
                f"ssl_options.fail_if_no_peer_cert = {'true' if tls.require_client_cert else 'false'}",
            ]
        if self.prometheus_port is not None:
            lines += ["prometheus.tcp.ip = 127.0.0.1", f"prometheus.tcp.port = {self.prometheus_port}"]
        (base / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        # Our own env file, so /etc/rabbitmq/rabbitmq-env.conf (the shared node's) is not read.
        (base / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        (base / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")

    def start(self) -> None:
        """Start the node in the background; ``wait`` for it."""
        with (self.base / "server.out").open("wb") as log:
            self.process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: ``stop`` can end all of it
            )

    def wait(self) -> None:
        """Block until the node runs (its pid file is written and the app started)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                out = (self.base / "server.out").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"RabbitMQ node {self.node} exited during start-up:\n{out}")
            if (self.base / "node.pid").exists():
                result = subprocess.run(
                    [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node, "await_startup", "--timeout", "60"],
                    env=self.env(),
                    capture_output=True,
                    timeout=90,
                    check=False,
                )
                if result.returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node {self.node} did not start within {START_TIMEOUT:g} s")
            time.sleep(0.5)  # polling a process that starts in seconds, with a deadline

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the node's processes used so far, from /proc."""
        assert self.process is not None
        group = os.getpgid(self.process.pid)
        ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            fields = stat.rpartition(")")[2].split()
            if int(fields[2]) == group:  # pgrp
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Stop the node and remove its directory; idempotent."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # RabbitMQ stops cleanly on SIGTERM
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


def start_nodes(
    base: Path, names: Sequence[str], *, plugins: Sequence[str] = (), tls: Tls | None = None
) -> list[RabbitNode]:
    """Start one private node per name under ``base`` (all at once), each with ``plugins``
    and, with ``tls``, a TLS listener; return them running. Stop them with ``RabbitNode.stop``."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        raise ServiceMissing("rabbitmq-server (Debian package rabbitmq-server)")
    tag = uuid.uuid4().hex[:6]
    nodes = [
        RabbitNode(
            name=f"hubtest-{name}-{tag}",
            base=base / name,
            amqp_port=free_port(),
            dist_port=free_port(),
            tls_port=free_port() if tls is not None else None,
            plugins=tuple(plugins),
            prometheus_port=free_port() if "rabbitmq_prometheus" in plugins else None,
        )
        for name in names
    ]
    try:
        for node in nodes:
            node.write_config(tls)
            node.start()
        for node in nodes:
            node.wait()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes
