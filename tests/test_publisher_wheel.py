"""The publish helper as a back-end developer gets it: the wheel of publisher/, alone in a new venv.

The wheel is built from a copy of publisher/ (nothing is written into the checkout) and
installed into a fresh virtualenv with its dependencies from the package index, without
the hub. There it must import and work without the server stack: publish on a fresh
vhost no hub ever ran on (the exchange gets declared), mint a token a hub accepts, and
reach a socket once a hub runs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from testkit import SECRET, environment, run_hub
from testkit.services import fresh_vhost
from tests.test_hubnotify import default_names, exchange_kind

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(600)]

PACKAGE = Path(__file__).resolve().parent.parent / "publisher"
SERVER_STACK = ("starlette", "uvicorn", "prometheus_client", "hub", "msgpack", "cryptography", "redis")

# What a back-end service does with the helper; run by the venv's interpreter, one step per call.
SCRIPT = r"""
import asyncio, importlib.util, json, sys
from hubnotify import BlockingPublisher, Publisher, mint_token

step, args = sys.argv[1], sys.argv[2:]
if step == "absent":
    print(json.dumps([name for name in args if importlib.util.find_spec(name) is not None]))
elif step == "publish":  # blocking, an integer user id, only the URL
    with BlockingPublisher(args[0]) as publisher:
        print(publisher.publish(42, json.loads(args[1])))
elif step == "unroutable":  # no hub yet: returned (mandatory), published again until the deadline
    from hubnotify.confirm import Unroutable
    with BlockingPublisher(args[0], timeout=1) as publisher:
        try:
            publisher.publish(42, json.loads(args[1]))
        except Unroutable:
            print("unroutable")
elif step == "publish-async":
    async def main():
        async with Publisher(args[0]) as publisher:
            print(await publisher.publish_topic("team-7", json.loads(args[1])))
    asyncio.run(main())
elif step == "token":
    print(mint_token(42, secret=args[0], topics=["team-7"]))
elif step == "presence":  # without the [presence] extra: a message saying how to get it
    async def main():
        try:
            await Publisher("amqp://unused/", redis_url="redis://unused/").is_online(42)
        except ModuleNotFoundError as exc:
            print(exc)
    asyncio.run(main())
"""


def run(command: list[str | Path], timeout: float = 300) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of publisher/, built from a copy (a build writes build/ and *.egg-info)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "publisher"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", root / "dist", source])
    (built,) = (root / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def light(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv's python with only the wheel installed (and what it depends on)."""
    venv = tmp_path_factory.mktemp("light") / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel])
    (venv / "step.py").write_text(SCRIPT)
    return python


def step(python: Path, *args: str) -> str:
    return run([python, python.parent.parent / "step.py", *args], timeout=60).strip()


def test_the_wheel(wheel: Path) -> None:
    assert wheel.name == "notification_hub_publisher-0.1.0-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"hubnotify", "notification_hub_publisher-0.1.0.dist-info"}
    assert "hubnotify/py.typed" in names
    assert "notification_hub_publisher-0.1.0.dist-info/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read("notification_hub_publisher-0.1.0.dist-info/METADATA").decode()
    requires = sorted(line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist"))
    assert requires == [
        "PyJWT>=2.8",
        'PyJWT[crypto]>=2.8; extra == "crypto"',
        "aio-pika>=9.4",
        'redis>=5.0; extra == "presence"',
    ]


def test_installed_alone_without_the_server_stack(light: Path) -> None:
    assert json.loads(step(light, "absent", *SERVER_STACK)) == []
    installed = json.loads(run([light, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"]))
    names = {package["name"].lower() for package in installed}
    assert "notification-hub-publisher" in names
    assert not names & {"starlette", "uvicorn", "prometheus-client", "notification-hub", "msgpack", "redis"}
    assert "[presence]" in step(light, "presence")


async def test_publishes_on_a_fresh_vhost_and_reaches_a_socket(light: Path) -> None:
    async with fresh_vhost("wheel") as url, environment() as env:
        first = await asyncio.to_thread(step, light, "unroutable", url, '"before any hub ever started"')
        assert first == "unroutable"  # the helper declared the exchange; no queue took the message
        assert await exchange_kind(url, "notifications") == "topic true"
        async with run_hub("distributed", env={**env, **default_names(url)}) as hub:
            token = await asyncio.to_thread(step, light, "token", SECRET)
            client = await hub.connect("42", token=token)  # a token minted by the light package
            assert client.connected["topics"] == ["user.42", "team-7"]
            id = await asyncio.to_thread(step, light, "publish", url, '{"text": "hello"}')
            await asyncio.to_thread(step, light, "publish-async", url, '"for the team"')
            frames = await client.notifications(2)
            expected = [("user.42", {"text": "hello"}), ("team-7", "for the team")]
            assert [(n["topic"], n["data"]) for n in frames] == expected
            assert frames[0]["id"] == id
            await client.close()
