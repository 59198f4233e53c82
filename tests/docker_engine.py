"""A private Docker engine for tests/test_docker.py, with STAND-IN images for Docker Hub's.

The test starts its own ``dockerd`` (Debian's ``docker.io``) on its own socket, exec root
and data root, so nothing else on the machine talks to it and built layers survive from
one run to the next (the second run builds nothing). One test process at a time holds
it (a lock file); it is stopped when the test module ends.

No registry can be reached here, so ``docker/standins/build.sh`` builds stand-ins for
``python:3.11-slim``, ``rabbitmq:3.13-management``, ``redis:7-alpine`` and
``haproxy:2.6`` from Debian bookworm packages and tags them with those names. They are
NOT the official images (docker/README.md, "Without a registry", lists the
differences); docker/compose.yaml and docker/Dockerfile keep naming the official ones.
A missing tool fails the test, naming the Debian package that provides it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.services import missing

ROOT = Path(__file__).resolve().parent.parent
STANDINS = ROOT / "docker" / "standins" / "build.sh"
SOCKET = "/run/hub-test-docker.sock"
DATA_ROOT = Path("/var/lib/hub-test-docker")
EXEC_ROOT = Path("/run/hub-test-docker")
PIDFILE = EXEC_ROOT / "dockerd.pid"
LOCK = Path("/var/lib/hub-test-docker.lock")
LOG = Path("/var/log/hub-test-docker.log")
#: The Debian docker.io CLI, matching the daemon (another `docker` may come first on PATH).
DOCKER = "/usr/bin/docker"

#: tool → the Debian package that provides it.
TOOLS = {
    "/usr/sbin/dockerd": "docker.io",
    DOCKER: "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}


class DockerError(AssertionError):
    """A docker or docker-compose command failed; the message has its output."""


def _tool(name: str, package: str) -> str:
    path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name, path="/usr/sbin:/usr/bin")
    if not path or not os.access(path, os.X_OK):
        missing(f"{name} is not installed (apt-get install -y {package})")
    return path


@dataclass(frozen=True)
class Project:
    """A compose project: its name, its files and the variables compose interpolates."""

    name: str
    files: list[Path]
    env: Mapping[str, str]


@dataclass(frozen=True)
class Engine:
    """The running private engine: ``run`` docker and docker-compose commands against it."""

    env: Mapping[str, str]
    compose_tool: str

    def run(
        self, *argv: str, env: Mapping[str, str] | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command with DOCKER_HOST set to this engine; raise DockerError on failure if ``check``."""
        result = subprocess.run(
            list(argv), env={**self.env, **(env or {})}, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise DockerError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result

    def docker(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker args`` with the daemon's own CLI."""
        return self.run(DOCKER, *args, timeout=timeout, check=check)

    def compose(
        self, project: Project, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``docker-compose -p <name> -f <file>... args`` (docker-compose 1.29, as documented)."""
        argv = [self.compose_tool, "-p", project.name]
        for file in project.files:
            argv += ["-f", str(file)]
        return self.run(*argv, *args, env=project.env, timeout=timeout, check=check)

    def health(self, container: str) -> str:
        """``healthy``, ``starting``, ``unhealthy``, or the state of a container without a health check."""
        fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        return self.docker("inspect", "-f", fmt, container, check=False).stdout.strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(pid: int, timeout: float = 60) -> None:
    """SIGTERM the daemon and wait for it (SIGKILL after ``timeout``)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _stop_stale_daemon() -> None:
    """A daemon left by an earlier run of this test that was killed (we hold the lock: nobody uses it)."""
    try:
        pid = int(PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if cmdline and cmdline[0].endswith(b"dockerd") and str(DATA_ROOT).encode() in cmdline:
        _stop(pid)


@contextlib.contextmanager
def engine() -> Iterator[Engine]:
    """Start the private dockerd (waiting for the lock), yield it, stop it."""
    tools = {name: _tool(name, package) for name, package in TOOLS.items()}
    if os.geteuid() != 0:
        missing("root: the docker test starts its own dockerd (run `make test` as root, as CI does)")
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    EXEC_ROOT.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worktree's run: wait for it (the test's timeout bounds this)
        _stop_stale_daemon()
        with LOG.open("w") as log:
            daemon = subprocess.Popen(
                [
                    tools["/usr/sbin/dockerd"],
                    f"--host=unix://{SOCKET}",
                    f"--data-root={DATA_ROOT}",
                    f"--exec-root={EXEC_ROOT}",
                    f"--pidfile={PIDFILE}",
                    "--storage-driver=overlay2",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        env = {**os.environ, "DOCKER_HOST": f"unix://{SOCKET}", "DOCKER": DOCKER}
        env.pop("DOCKER_CONTEXT", None)
        running = Engine(env, tools["docker-compose"])
        try:
            deadline = time.monotonic() + 60
            while running.docker("version", check=False).returncode != 0:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise DockerError(
                        f"dockerd did not start (exit {daemon.poll()}); {LOG}:\n{LOG.read_text()[-3000:]}"
                    )
                time.sleep(0.2)
            _remove_leftovers(running)
            yield running
        finally:
            _stop(daemon.pid)
            daemon.wait(timeout=10)


def _remove_leftovers(running: Engine) -> None:
    """Containers, volumes and networks an earlier run left (killed), and untagged images.

    This engine is the test's alone, so everything in it is the test's to remove.
    """
    containers = running.docker("ps", "-aq").stdout.split()
    if containers:
        running.docker("rm", "-f", "-v", *containers)
    running.docker("volume", "prune", "-f")
    running.docker("network", "prune", "-f")
    running.docker("image", "prune", "-f")  # images a later build took the tag from (layers stay cached)


def build_standins(running: Engine) -> None:
    """docker/standins/build.sh: the Debian-made stand-ins, tagged with the official names."""
    running.run("bash", str(STANDINS), timeout=900)
