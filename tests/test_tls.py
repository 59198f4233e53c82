"""TLS everywhere, with real handshakes: ``amqps://``, ``rediss://``, ``wss://`` (hub and haproxy).

A throwaway CA is made for the module (tests/tls_ca.py). A private RabbitMQ node gets a
TLS listener that requires a client certificate, and the shipped definitions (so the
hub runs as `hub` and producers publish as `publisher`); a private redis-server listens
only on a ``tls-port`` and requires client certificates too; haproxy runs the shipped
template with a certificate on its bind line. Each refusal is a real failed handshake:
a hub told to trust another CA, a hub without a client certificate, browsers that do
not trust the hub's or the load balancer's certificate.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from hub.publisher import Publisher
from hub.settings import Settings
from testkit.net import reachable
from testkit.rabbit_node import RabbitNode, Tls, start_nodes
from tests.definitions import DEFAULT_NAMES, with_passwords
from tests.harness import free_port, make_token, run_hub, spawn_hub_serve, wait_for
from tests.services import missing
from tests.test_compose import load_cluster
from tests.tls_ca import Pki, make_pki

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

README = Path(__file__).parent.parent / "README.md"
PHP_AMQPLIB = Path("/usr/share/php/PhpAmqpLib/autoload.php")  # Debian's php-amqplib


@dataclass(frozen=True)
class Services:
    pki: Pki
    rabbit: RabbitNode
    redis_port: int
    passwords: dict[str, str]

    def amqps(self, user: str) -> str:
        return self.rabbit.amqps_url(user, self.passwords[user])

    @property
    def rediss(self) -> str:
        return f"rediss://localhost:{self.redis_port}/0"

    def hub_env(self, prefix: str, **extra: str) -> dict[str, str]:
        """A hub on both TLS services, trusting the test CA, with client certificates."""
        pki = self.pki
        return {
            "HUB_AMQP_URL": self.amqps("hub"),
            "HUB_AMQP_CA_FILE": str(pki.ca),
            "HUB_AMQP_CERT_FILE": str(pki.client_cert),
            "HUB_AMQP_KEY_FILE": str(pki.client_key),
            "HUB_REDIS_URL": self.rediss,
            "HUB_REDIS_CA_FILE": str(pki.ca),
            "HUB_REDIS_CERT_FILE": str(pki.client_cert),
            "HUB_REDIS_KEY_FILE": str(pki.client_key),
            "HUB_REDIS_PREFIX": prefix,
            **DEFAULT_NAMES,
            **extra,
        }

    def client_context(self) -> ssl.SSLContext:
        """What a producer or browser that trusts the test CA uses."""
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        return context


def start_redis_tls(directory: Path, pki: Pki) -> tuple[subprocess.Popen[bytes], int]:
    """A private redis-server on a loopback ``tls-port`` only, requiring client certificates."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server (Debian package redis-server)")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--tls-port",
                str(port),
                "--tls-cert-file",
                str(pki.server_cert),
                "--tls-key-file",
                str(pki.server_key),
                "--tls-ca-cert-file",
                str(pki.ca),
                "--tls-auth-clients",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, port


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    base = tmp_path_factory.mktemp("tls")
    pki = make_pki(base / "pki")
    redis, redis_port = start_redis_tls(base / "redis", pki)
    try:
        (rabbit,) = start_nodes(base, ["tls"], tls=Tls(pki.ca, pki.server_cert, pki.server_key))
        try:
            passwords = {user: uuid.uuid4().hex for user in ("hub", "publisher", "federation")}
            (base / "definitions.json").write_text(json.dumps(with_passwords(passwords)))
            rabbit.ctl("import_definitions", str(base / "definitions.json"))
            deadline = time.monotonic() + 30
            while not reachable("127.0.0.1", redis_port):
                assert redis.poll() is None, (base / "redis" / "redis.log").read_text()[-1000:]
                assert time.monotonic() < deadline, "redis-server's TLS port did not open within 30 s"
                time.sleep(0.05)  # polling a port with a deadline
            yield Services(pki, rabbit, redis_port, passwords)
        finally:
            rabbit.stop()
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait(timeout=30)


@pytest.fixture
def prefix() -> str:
    """A key prefix per test (the module's redis-server is private: it goes with its keys)."""
    return f"hubtest:tls:{uuid.uuid4().hex[:8]}:"


async def test_a_hub_on_amqps_and_rediss_serving_wss_delivers(services: Services, prefix: str) -> None:
    env = services.hub_env(
        prefix, HUB_TLS_CERT_FILE=str(services.pki.server_cert), HUB_TLS_KEY_FILE=str(services.pki.server_key)
    )
    async with run_hub("distributed", env=env) as hub:
        browser = ssl.create_default_context(cafile=str(services.pki.ca))
        async with connect(f"wss://localhost:{hub.port}/ws", ssl=browser, subprotocols=["hub.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connect", "token": make_token("tls-user")}))
            assert json.loads(await ws.recv())["type"] == "connected"
            async with Publisher(services.amqps("publisher"), ssl_context=services.client_context()) as publisher:
                await publisher.publish("tls-user", {"over": "tls"}, message_id="tls-1")
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["data"] == {"over": "tls"}
            assert frame["offset"]  # sequenced through rediss://
            # the client side of presence over rediss://: `hub presence` and the helper
            base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hub", "presence", "tls-user",
                env={**base, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(cli.communicate(), 30)
            assert cli.returncode == 0, err.decode()
            assert json.loads(out)["users"]["tls-user"] == {"online": True, "connections": 1}
            settings = Settings.from_env({**env, "HUB_AMQP_URL": services.amqps("publisher")}, serving=False)
            async with Publisher.from_settings(settings) as helper:
                assert await helper.is_online("tls-user")
        # the broker says both connections were TLS
        rows = services.rabbit.ctl("list_connections", "user", "ssl", "peer_cert_subject", "--no-table-headers")
        assert re.search(r"^hub\ttrue\tCN=hub-test-client$", rows, re.M), rows
        # a browser that does not trust the test CA refuses the hub's certificate
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(f"wss://localhost:{hub.port}/ws", ssl=ssl.create_default_context())


async def serve_once(env: dict[str, str]) -> tuple[int, str]:
    """Run ``hub serve`` with ``env``; its exit status and stderr (it must fail to start)."""
    process = await spawn_hub_serve({"HUB_API_KEY": "tls-key", "HUB_PORT": str(free_port()), **env})
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 40)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("expected hub serve to give up on the untrusted service") from None
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize(
    ("case", "change", "service"),
    [
        ("RabbitMQ's certificate from another CA", {"HUB_AMQP_CA_FILE": "rogue_ca"}, "RabbitMQ"),
        ("Redis' certificate from another CA", {"HUB_REDIS_CA_FILE": "rogue_ca"}, "Redis"),
        ("no client certificate for RabbitMQ", {"HUB_AMQP_CERT_FILE": None, "HUB_AMQP_KEY_FILE": None}, "RabbitMQ"),
        ("no client certificate for Redis", {"HUB_REDIS_CERT_FILE": None, "HUB_REDIS_KEY_FILE": None}, "Redis"),
    ],
)
async def test_an_untrusted_peer_fails_the_handshake(
    services: Services, prefix: str, case: str, change: dict[str, str | None], service: str
) -> None:
    env = services.hub_env(prefix, HUB_BACKEND_TIMEOUT="2")
    for name, value in change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = str(getattr(services.pki, value))
    status, stderr = await serve_once(env)
    lines = stderr.strip().splitlines()
    assert status == 3, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("hub: cannot start:"), lines
    assert service in lines[0], lines
    assert services.passwords["hub"] not in stderr
    if "CA" in case:
        assert "CERTIFICATE_VERIFY_FAILED" in lines[0] or "certificate verify failed" in lines[0], lines


def haproxy_config(services: Services, bundle: Path, bind_port: int, hub_port: int) -> str:
    """The shipped template (docker/haproxy.cfg.template) with a certificate on its bind line."""
    cluster = load_cluster()
    return str(
        cluster.render_lb(
            [("hub1", f"127.0.0.1:{hub_port}")],
            bind=f"127.0.0.1:{bind_port} ssl crt {bundle} alpn http/1.1",
            stats_bind=f"127.0.0.1:{free_port()}",
        )
    )


@pytest.fixture
async def haproxy_in_front(
    services: Services, prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Any, dict[str, int]]]:
    cluster = load_cluster()
    binary = cluster.find_haproxy()
    if binary is None:
        missing("haproxy (Debian package haproxy)")
    async with run_hub("distributed", env=services.hub_env(prefix)) as hub:
        ports: dict[str, int] = {}
        processes = []
        for name, bundle in (("trusted", services.pki.server_bundle), ("rogue", services.pki.rogue_bundle)):
            ports[name] = free_port()
            config = tmp_path / f"haproxy-{name}.cfg"
            config.write_text(haproxy_config(services, bundle, ports[name], hub.port))
            check = await asyncio.to_thread(
                subprocess.run, [binary, "-c", "-f", str(config)], capture_output=True, check=False
            )
            assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
            processes.append(
                await asyncio.create_subprocess_exec(
                    binary,
                    "-db",
                    "-f",
                    str(config),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        try:
            for port in ports.values():
                await wait_for(lambda port=port: reachable("127.0.0.1", port), what="haproxy's TLS bind")
            yield hub, ports
        finally:
            for process in processes:
                process.terminate()
                await process.wait()


async def test_haproxy_terminates_wss_with_the_shipped_config(
    services: Services, haproxy_in_front: tuple[Any, dict[str, int]]
) -> None:
    hub, ports = haproxy_in_front
    browser = ssl.create_default_context(cafile=str(services.pki.ca))

    async def through_haproxy() -> Any:
        try:
            return await connect(f"wss://localhost:{ports['trusted']}/ws", ssl=browser)
        except OSError:
            return None  # haproxy's first health check has not passed yet

    ws = await wait_for(through_haproxy, what="a wss:// socket through haproxy")
    async with ws:
        await ws.send(json.dumps({"type": "connect", "token": make_token("behind-lb")}))
        assert json.loads(await ws.recv())["type"] == "connected"
        await hub.publish("behind-lb", "through haproxy")
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["data"] == "through haproxy"
    # the same config with a certificate from a CA the browser does not trust: refused
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(f"wss://localhost:{ports['rogue']}/ws", ssl=browser)


def readme_php() -> str:
    """The PHP producer the README shows (its ```php block), unchanged."""
    blocks = re.findall(r"```php\n(.*?)```", README.read_text(), re.S)
    (script,) = [block for block in blocks if "basic_publish" in block]
    return script


async def test_the_readme_php_producer_reaches_a_socket_as_publisher_over_tls(
    services: Services, prefix: str, tmp_path: Path
) -> None:
    php = shutil.which("php")
    if php is None or not await asyncio.to_thread(PHP_AMQPLIB.exists):
        missing("php-cli and php-amqplib (Debian packages php-cli php-amqplib)")
    script = tmp_path / "publish.php"
    script.write_text(readme_php())
    async with run_hub("distributed", env=services.hub_env(prefix)) as hub:
        client = await hub.connect("42")
        result = await asyncio.to_thread(
            subprocess.run,
            [php, str(script)],
            env={
                **os.environ,
                "AMQP_HOST": "localhost",
                "AMQP_PORT": str(services.rabbit.tls_port),
                "AMQP_PASSWORD": services.passwords["publisher"],
                "AMQP_CA_FILE": str(services.pki.ca),
                "AMQP_CERT_FILE": str(services.pki.client_cert),
                "AMQP_KEY_FILE": str(services.pki.client_key),
            },
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        (frame,) = await client.notifications(1)
        assert frame["data"] == {"text": "Your order shipped"}
        assert frame["id"] == "order-1234-shipped"
        await client.close()
