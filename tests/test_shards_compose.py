"""docker/compose.cluster.yaml: valid, and its parts agree with each other and with the hub.

Validated as tests/test_compose.py validates compose.yaml: ``docker-compose config``
checks the schema and resolves interpolation offline (no container engine runs here).
"""

from __future__ import annotations

import re
import subprocess

import yaml

from hub.settings import documented_fields, env_name
from tests.test_compose import DOCKER, ENV, need

COMPOSE = DOCKER / "compose.cluster.yaml"
CLUSTER_ENV = {**ENV, "RABBITMQ_ERLANG_COOKIE": "c" * 32}
RABBITS = ["rabbitmq1", "rabbitmq2", "rabbitmq3"]
HUBS = ["hub1", "hub2", "hub3"]
SENTINELS = ["sentinel1", "sentinel2", "sentinel3"]


def compose(*args: str, env: dict[str, str] = CLUSTER_ENV) -> subprocess.CompletedProcess[str]:
    tool = need("docker-compose", "apt-get install -y docker-compose")
    return subprocess.run(
        [tool, "-f", str(COMPOSE), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def config(env: dict[str, str] = CLUSTER_ENV) -> dict[str, dict[str, dict[str, object]]]:
    result = compose("config", env=env)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, dict[str, dict[str, object]]] = yaml.safe_load(result.stdout)
    return loaded


def hub_env(services: dict[str, dict[str, object]], name: str) -> dict[str, str]:
    environment = services[name]["environment"]
    assert isinstance(environment, dict)
    return {str(k): str(v) for k, v in environment.items()}


def test_the_clustered_file_is_valid_and_complete() -> None:
    services = config()["services"]
    assert sorted(services) == sorted([*RABBITS, *HUBS, *SENTINELS, "redis-primary", "redis-replica", "lb"])
    for name in HUBS:
        env = hub_env(services, name)
        assert env["HUB_REPLICA_ID"] == name
        assert env["HUB_AMQP_URL"].split(",") == [f"amqp://hub:hub@{node}:5672/" for node in RABBITS]
        assert env["HUB_INGEST_QUEUE_TYPE"] == "quorum"
        assert env["HUB_INGEST_MAX_PRIORITY"] == "0"  # quorum queues have no priorities
        assert env["HUB_INGEST_SHARDS"] == "6"
        assert env["HUB_REDIS_SENTINELS"].split(",") == [f"{s}:26379" for s in SENTINELS]
        assert env["HUB_REDIS_MASTER"] == "hub"
        assert services[name]["stop_grace_period"] == "30s"
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict)
        assert sorted(depends) == sorted([*RABBITS, *SENTINELS])


def test_every_hub_variable_is_a_setting() -> None:
    """A misspelt HUB_* variable would be ignored silently by a real deployment."""
    known = {env_name(field.name) for field in documented_fields()}
    # Sentinel settings come with the Redis Sentinel work of issue 13 (branch w2-redisha).
    known |= {"HUB_REDIS_SENTINELS", "HUB_REDIS_MASTER"}
    used = set(re.findall(r"^\s+(HUB_[A-Z_]+):", COMPOSE.read_text(), re.M))
    assert used
    assert used <= known, sorted(used - known)


def test_shards_come_from_the_environment() -> None:
    services = config({**CLUSTER_ENV, "HUB_INGEST_SHARDS": "12"})["services"]
    assert {hub_env(services, name)["HUB_INGEST_SHARDS"] for name in HUBS} == {"12"}


def test_secrets_and_the_cookie_are_required() -> None:
    for variable in ("HUB_JWT_SECRET", "HUB_API_KEY", "RABBITMQ_ERLANG_COOKIE"):
        result = compose("config", env={k: v for k, v in CLUSTER_ENV.items() if k != variable})
        assert result.returncode != 0
        assert variable in result.stderr


def test_the_rabbitmq_nodes_form_one_cluster_with_the_plugin() -> None:
    services = config()["services"]
    conf = (DOCKER / "rabbitmq" / "cluster.conf").read_text()
    assert re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+ = rabbit@(\S+)$", conf, re.M) == RABBITS
    plugins = (DOCKER / "rabbitmq" / "enabled_plugins.cluster").read_text()
    for plugin in ("rabbitmq_consistent_hash_exchange", "rabbitmq_management", "rabbitmq_prometheus"):
        assert plugin in plugins
    for name in RABBITS:
        service = services[name]
        assert service["hostname"] == name
        volumes = " ".join(str(v) for v in service["volumes"])  # type: ignore[attr-defined]
        assert "/etc/rabbitmq/enabled_plugins" in volumes
        assert "/etc/rabbitmq/conf.d/20-cluster.conf" in volumes
        environment = service["environment"]
        assert isinstance(environment, dict)
        assert environment["RABBITMQ_ERLANG_COOKIE"] == CLUSTER_ENV["RABBITMQ_ERLANG_COOKIE"]


def test_the_sentinels_watch_the_primary_and_the_lb_serves_the_hubs() -> None:
    services = config()["services"]
    replica = " ".join(str(part) for part in services["redis-replica"]["command"])  # type: ignore[attr-defined]
    assert "--replicaof redis-primary 6379" in replica
    for name in SENTINELS:
        command = " ".join(str(part) for part in services[name]["command"])  # type: ignore[attr-defined]
        assert "sentinel monitor hub redis-primary 6379 2" in command  # quorum of 2 out of 3
    servers = re.findall(r"^\s+server (\S+) (\S+) check$", (DOCKER / "haproxy.cfg").read_text(), re.M)
    assert [name for name, _ in servers] == HUBS
