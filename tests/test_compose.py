"""docker/: the compose file is valid, and the local cluster runs the LB configuration compose runs.

No container engine runs here: ``docker-compose config`` validates the file against
the compose schema and resolves interpolation offline. A missing
``docker-compose`` or ``haproxy`` fails the test, naming it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.services import missing

DOCKER = Path(__file__).resolve().parent.parent / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV = {**os.environ, "HUB_JWT_SECRET": "s" * 32, "HUB_API_KEY": "k" * 24}


def load_cluster() -> ModuleType:
    """docker/cluster.py as a module (docker/ is not a package)."""
    spec = importlib.util.spec_from_file_location("hub_docker_cluster", DOCKER / "cluster.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def need(tool: str, install: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        missing(f"{tool} is not installed ({install})")
    return path


def compose(*args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    tool = need("docker-compose", "apt-get install -y docker-compose")
    return subprocess.run(
        [tool, "-f", str(COMPOSE), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_compose_file_is_valid() -> None:
    result = compose("config")
    assert result.returncode == 0, result.stderr
    services = compose("config", "--services").stdout.split()
    assert sorted(services) == ["hub1", "hub2", "hub3", "lb", "rabbitmq", "redis"]
    config = result.stdout
    for name in ("hub1", "hub2", "hub3"):
        assert f"HUB_REPLICA_ID: {name}" in config
    assert config.count("HUB_AMQP_URL: amqp://hub:hub@rabbitmq:5672/") == 3
    assert config.count("HUB_REDIS_URL: redis://redis:6379/0") == 3
    assert config.count("stop_grace_period: 30s") == 3
    assert "/usr/local/etc/haproxy/haproxy.cfg" in config
    assert "rabbitmq:3.13-management" in config
    assert config.count("healthcheck:") >= 5


def test_compose_refuses_missing_secrets() -> None:
    env = {k: v for k, v in ENV.items() if k not in ("HUB_JWT_SECRET", "HUB_API_KEY")}
    result = compose("config", env=env)
    assert result.returncode != 0
    assert "HUB_JWT_SECRET" in result.stderr or "HUB_API_KEY" in result.stderr


def test_rabbitmq_plugins() -> None:
    plugins = (DOCKER / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_management" in plugins
    assert "rabbitmq_prometheus" in plugins


def test_checked_in_lb_config_is_the_rendered_template() -> None:
    """compose mounts docker/haproxy.cfg; it must be the template the local cluster renders."""
    cluster = load_cluster()
    assert (DOCKER / "haproxy.cfg").read_text() == cluster.render_compose_lb(), (
        "docker/haproxy.cfg is stale: python docker/cluster.py render-compose > docker/haproxy.cfg"
    )
    servers = re.findall(r"^\s+server (\S+) (\S+) check$", (DOCKER / "haproxy.cfg").read_text(), re.M)
    services = compose("config", "--services").stdout.split()
    assert [name for name, _ in servers] == [s for s in services if s.startswith("hub")]
    assert all(address.endswith(":8080") for _, address in servers)


def test_lb_configs_parse(tmp_path: Path) -> None:
    haproxy = need("haproxy", "apt-get install -y haproxy")
    cluster = load_cluster()
    local = tmp_path / "local.cfg"
    local.write_text(
        cluster.render_lb(
            [("hub1", "127.0.0.1:1"), ("hub2", "127.0.0.1:2")], bind="127.0.0.1:18080", stats_bind="127.0.0.1:18404"
        )
    )
    for cfg in (local, DOCKER / "haproxy.cfg"):
        result = subprocess.run(
            [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    text = (DOCKER / "haproxy.cfg.template").read_text()
    assert "timeout tunnel" in text  # WebSocket tunnels outlive the HTTP timeouts
    assert "option httpchk GET /readyz" in text


def test_image_is_slim_and_non_root() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    assert "pip install ." in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users
    assert not users[-1].startswith(("0", "root"))
    assert 'ENTRYPOINT ["hub"]' in dockerfile


def test_host_ports_are_configurable() -> None:
    """No hard-coded host port: each published port comes from a variable (defaults as documented)."""
    published = re.findall(r'^\s+- "(.+):\d+"', COMPOSE.read_text(), re.M)
    assert published
    assert all("${" in mapping for mapping in published), published
    ports = {"HUB_PUBLIC_PORT": "18080", "HUB_STATS_PORT": "18404"}
    ports |= {"RABBITMQ_MANAGEMENT_PORT": "18672", "RABBITMQ_METRICS_PORT": "18692"}
    config = compose("config", env={**ENV, **ports}).stdout
    for port in ports.values():
        assert port in config, f"{port} not published: {config}"


def test_low_file_limit_override() -> None:
    """docker/compose.lowfd.yaml lowers HAProxy's nofile limit to HUB_LB_NOFILE."""
    tool = need("docker-compose", "apt-get install -y docker-compose")
    files = ["-f", str(COMPOSE), "-f", str(DOCKER / "compose.lowfd.yaml")]
    result = subprocess.run(
        [tool, *files, "config"], env={**ENV, "HUB_LB_NOFILE": "4321"}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"nofile:\n\s+hard: 4321\n\s+soft: 4321", result.stdout), result.stdout
    assert "200000" not in result.stdout


def test_both_dockerignore_files_agree() -> None:
    """BuildKit reads docker/Dockerfile.dockerignore, the classic builder (docker-compose 1.x) .dockerignore."""

    def rules(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]

    assert rules(DOCKER.parent / ".dockerignore") == rules(DOCKER / "Dockerfile.dockerignore")
    assert "!hub/" in rules(DOCKER / "Dockerfile.dockerignore")
