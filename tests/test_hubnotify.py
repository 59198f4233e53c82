"""The publish helper package (``hubnotify``, distribution notification-hub-publisher, publisher/).

Its contract with the hub: tokens it mints are accepted, integer user ids, the exchange
declared on a fresh RabbitMQ, a write-only publisher account, failures that leave
nothing running, deadlines; and that the hub uses its one copy of each shared piece.
"""

from __future__ import annotations

import ast
import asyncio
import math
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import hubnotify
from hub.auth import Authenticator
from hub.settings import DEFAULTS, Settings
from hubnotify import BlockingPublisher, InvalidTopic, Publisher, mint_token
from hubnotify.confirm import Unroutable
from hubnotify.presence import online_many
from hubnotify.topics import as_user_id
from testkit import SECRET, environment, run_hub, wait_for
from testkit.services import REDIS_URL, amqp_url, fresh_vhost, names, process_vhost, rabbitmqctl
from tests.tcp_proxy import proxied, via

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "publisher"


# ------------------------------------------------------------------ tokens


def test_mint_token_claims() -> None:
    before = int(time.time())
    token = mint_token(42, secret=SECRET, topics=["team-7", "broadcast"], ttl=600, audience="app", issuer="shop")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="app", issuer="shop")
    assert claims["sub"] == "42"  # an integer key becomes the id's text: `sub` is a string (RFC 7519)
    assert claims["topics"] == ["team-7", "broadcast"]
    assert before <= claims["iat"] <= claims["exp"] - 600
    plain = jwt.decode(mint_token("u-1", secret=SECRET), SECRET, algorithms=["HS256"])
    assert set(plain) == {"sub", "iat", "exp"}  # no topics, aud or iss unless asked for
    assert plain["exp"] - plain["iat"] == 3600


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"user": True}, InvalidTopic),
        ({"user": 4.2}, InvalidTopic),
        ({"user": "a.b"}, InvalidTopic),
        ({"user": ""}, InvalidTopic),
        ({"topics": ["user.*"]}, InvalidTopic),
        ({"ttl": 0}, ValueError),
        ({"ttl": -5}, ValueError),
        ({"ttl": math.nan}, ValueError),
        ({"ttl": True}, ValueError),
        ({"secret": ""}, ValueError),
        ({"algorithm": "none"}, ValueError),
        ({"algorithm": "HS512"}, ValueError),
    ],
)
def test_mint_token_refuses(arguments: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        mint_token(**{"user": "1", "secret": SECRET, **arguments})


def test_the_hub_accepts_minted_tokens() -> None:
    settings = Settings.from_env({"HUB_JWT_SECRET": SECRET, "HUB_JWT_AUDIENCE": "app", "HUB_JWT_ISSUER": "shop"})
    claims = Authenticator(settings).verify(
        mint_token(42, secret=SECRET, topics=["team-7"], audience="app", issuer="shop")
    )
    assert (claims.user, claims.topics) == ("42", ("user.42", "team-7"))
    # the hub's own development minting is this function, with its audience and issuer
    assert Authenticator(settings).verify(Authenticator(settings).mint("7")).user == "7"

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    es256 = Authenticator(Settings.from_env({"HUB_JWT_PUBLIC_KEY": public}))
    assert es256.verify(mint_token(9, secret=private, algorithm="ES256")).user == "9"


async def test_a_socket_connects_with_a_minted_token() -> None:
    async with run_hub("memory") as hub:
        client = await hub.connect("42", token=mint_token(42, secret=SECRET, topics=["team-7"]))
        assert client.connected["topics"] == ["user.42", "team-7"]
        await hub.publish(topic="team-7", data="for the team")
        assert [n["data"] for n in await client.notifications(1)] == ["for the team"]
        await client.close()


def test_as_user_id() -> None:
    assert [as_user_id(u) for u in (42, 0, -3, "x_1")] == ["42", "0", "-3", "x_1"]
    for bad in (True, 1.0, None, "a b", "9" * 129):
        with pytest.raises(InvalidTopic):
            as_user_id(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ one copy, one direction


def test_the_hub_uses_the_helpers_one_copy() -> None:
    import hub.auth
    import hub.backends.presence_scripts
    import hub.backends.topology
    import hub.payload
    import hub.presence_client
    import hub.publisher
    import hub.wire
    import hubnotify.message
    import hubnotify.payload
    import hubnotify.presence
    import hubnotify.publisher

    # the old import paths keep working: they are the same objects
    assert hub.publisher.Publisher is hubnotify.publisher.Publisher
    assert hub.publisher.BlockingPublisher is hubnotify.BlockingPublisher
    assert hub.presence_client.online_many is hubnotify.presence.online_many
    assert hub.backends.presence_scripts.COUNT_SCRIPT is hubnotify.presence.COUNT_SCRIPT
    assert hub.backends.presence_scripts.count_users is hubnotify.presence.count_users
    assert hub.payload.check is hubnotify.payload.check
    assert hub.payload.BadPayload is hubnotify.payload.BadPayload
    assert hub.wire.build_message is hubnotify.message.build_message
    assert hub.wire.validate_message_id is hubnotify.message.validate_message_id
    assert hub.backends.topology.declare_exchange is hubnotify.message.declare_exchange
    assert hub.auth.mint_token is hubnotify.mint_token
    assert (DEFAULTS.exchange, DEFAULTS.redis_prefix) == (hubnotify.message.EXCHANGE, hubnotify.presence.DEFAULT_PREFIX)
    assert DEFAULTS.backend_timeout == hubnotify.presence.DEFAULT_TIMEOUT

    sources = [*(ROOT / "hub").rglob("*.py"), *(PACKAGE / "src").rglob("*.py")]
    count_script = [p for p in sources if "for j = 2, #ARGV do" in p.read_text()]
    assert count_script == [PACKAGE / "src" / "hubnotify" / "presence.py"]
    for name in ("check", "build_message", "validate_message_id", "validate_topic", "InvalidTopic", "new_id"):
        definition = re.compile(rf"^(def|class) {name}\b", re.M)  # at module level
        defined = [p.relative_to(ROOT) for p in sources if definition.search(p.read_text())]
        assert len(defined) == 1, (name, defined)


def imported_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_the_helper_never_imports_the_hub() -> None:
    for path in (PACKAGE / "src").rglob("*.py"):
        hub_imports = [m for m in imported_modules(path) if m == "hub" or m.startswith("hub.")]
        assert not hub_imports, (path, hub_imports)
    # importing every module loads neither the hub nor redis-py (the presence extra, loaded on use)
    probe = (
        "import sys, hubnotify, hubnotify.presence, hubnotify.tokens, hubnotify.message; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'hub', 'redis', 'msgpack', 'starlette'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_packaging() -> None:
    """The hub depends on the helper at the same version; the image and both ignore files carry it."""
    import tomllib

    hub_project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"notification-hub-publisher[presence]=={hubnotify.__version__}" in hub_project["dependencies"]
    assert hub_project["version"] == hubnotify.__version__
    helper = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    assert helper["name"] == "notification-hub-publisher"
    assert sorted(helper["dependencies"]) == ["PyJWT>=2.8", "aio-pika>=9.4"]
    assert (PACKAGE / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "COPY publisher ./publisher" in dockerfile
    assert "pip install . ./publisher" in dockerfile
    for ignore in (ROOT / ".dockerignore", ROOT / "docker" / "Dockerfile.dockerignore"):
        assert "!publisher/" in ignore.read_text().splitlines()


# ------------------------------------------------------------------ against RabbitMQ and a hub


def default_names(url: str) -> dict[str, str]:
    """A deployment on ``url``'s vhost with the hub's default exchange and queue names, as a
    real one has (the Redis prefix stays the test environment's private one)."""
    keys = [key for key in names() if key != "HUB_REDIS_PREFIX"]
    return {"HUB_AMQP_URL": url, **{key: getattr(DEFAULTS, key.removeprefix("HUB_").lower()) for key in keys}}


async def exchange_kind(vhost_url: str, name: str) -> str | None:
    """``<type> <durable>`` of exchange ``name`` in the vhost of ``vhost_url``, None if absent."""
    vhost = vhost_url.rsplit("/", 1)[1]
    listing = await asyncio.to_thread(rabbitmqctl, "-q", "list_exchanges", "-p", vhost, "name", "type", "durable")
    for line in listing.splitlines():
        fields = line.split("\t")
        if fields[0] == name:
            return " ".join(fields[1:])
    return None


@pytest.mark.distributed
async def test_a_fresh_vhost_the_exchange_the_ingest_queue() -> None:
    """What the README says about the first publish, step by step, with the default names."""
    async with fresh_vhost() as url, environment() as env:
        deployment = {**env, **default_names(url)}
        assert await exchange_kind(url, "notifications") is None
        async with Publisher(url, timeout=1) as publisher:  # nothing but the URL, as in the README
            with pytest.raises(Unroutable):  # returned (mandatory), published again until the deadline
                await publisher.publish(42, "before any hub ever started")
        assert await exchange_kind(url, "notifications") == "topic true"

        async with run_hub("distributed", env=deployment) as hub:  # same declaration: no conflict
            client = await hub.connect("42", since={"user.42": "0-0"})
            async with Publisher(url) as publisher:
                await publisher.publish(42, "with a hub")
            frames = await client.notifications(1)
            assert [n["data"] for n in frames] == ["with a hub"]  # the first one went nowhere
            await client.expect_silence(0.2)
            await client.close()

        async with Publisher(url) as publisher:  # no hub runs: hub.ingest keeps it
            await publisher.publish(42, "while no hub runs")
        async with run_hub("distributed", env=deployment) as hub:
            client = await hub.connect("42", since={"user.42": frames[0]["offset"]})
            assert [n["data"] for n in await client.notifications(1)] == ["while no hub runs"]
            await client.close()


@pytest.mark.distributed
async def test_integer_user_ids() -> None:
    async with environment() as env, run_hub("distributed", env=env) as hub:
        client = await hub.connect("42")
        async with Publisher(
            env["HUB_AMQP_URL"],
            exchange=env["HUB_EXCHANGE"],
            redis_url=env["HUB_REDIS_URL"],
            redis_prefix=env["HUB_REDIS_PREFIX"],
        ) as publisher:
            await publisher.publish(42, "int")
            await publisher.publish_many([{"user": 42, "data": "many"}])
            assert await publisher.is_online(42) is True
            assert await publisher.online_many([42, "43"]) == {"42": True, "43": False}
            for bad in (True, 4.2):
                with pytest.raises(InvalidTopic):
                    await publisher.publish(bad, "x")  # type: ignore[arg-type]

        def blocking() -> dict[str, bool]:
            with BlockingPublisher(env["HUB_AMQP_URL"], exchange=env["HUB_EXCHANGE"]) as publisher:
                publisher.publish(42, "blocking")
            return online_many([42, 43], url=REDIS_URL, prefix=env["HUB_REDIS_PREFIX"])

        assert await asyncio.to_thread(blocking) == {"42": True, "43": False}
        frames = await client.notifications(3)
        assert [(n["topic"], n["data"]) for n in frames] == [("user.42", d) for d in ("int", "many", "blocking")]
        await client.close()


@pytest.mark.distributed
async def test_a_write_only_publisher_account() -> None:
    """An account that may write to the exchange but configure nothing (least privilege)
    uses the exchange the hub declared; without one, RabbitMQ's NOT_FOUND."""
    vhost, user, password = process_vhost(), f"hubtest-writer-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    exchange = f"t{uuid.uuid4().hex[:10]}.notifications"
    await asyncio.to_thread(rabbitmqctl, "-q", "add_user", user, password)
    try:
        await asyncio.to_thread(rabbitmqctl, "-q", "set_permissions", "-p", vhost, user, "^$", f"^{exchange}$", "^$")
        url = amqp_url(vhost).replace("guest:guest@", f"{user}:{password}@")
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity, match="NOT_FOUND"):
            await Publisher(url, exchange=exchange).connect()

        connection = await aio_pika.connect(amqp_url(vhost))  # the hub's side: declare, bind a queue
        try:
            channel = await connection.channel()
            declared = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(declared, "#")
            async with Publisher(url, exchange=exchange) as publisher:
                id = await publisher.publish(5, {"from": "writer"})
            message = await wait_for(lambda: queue.get(fail=False), what="the writer's message")
            assert (message.message_id, message.routing_key, message.body) == (id, "user.5", b'{"from":"writer"}')
            await message.ack()
            await declared.delete()
        finally:
            await connection.close()
    finally:
        await asyncio.to_thread(rabbitmqctl, "-q", "delete_user", user)


# A script run in its own interpreter: what it leaves behind shows on its stderr once the
# loop is closed and the garbage collected ("Event loop is closed", "Task was destroyed",
# "unclosed ..." ResourceWarnings).
FAILING_CONNECT = r"""
import asyncio, gc, sys
from hubnotify import BlockingPublisher, Publisher

url, exchange = sys.argv[1], sys.argv[2]

async def main():
    try:
        async with Publisher(url, exchange=exchange, timeout=2) as publisher:
            await publisher.publish(1, "x")
    except Exception as exc:
        print("async", type(exc).__name__)

asyncio.run(main())
try:
    BlockingPublisher(url, exchange=exchange, timeout=2)
except Exception as exc:
    print("blocking", type(exc).__name__)
gc.collect()
print("done")
"""

LEFTOVERS = ("Event loop is closed", "Task was destroyed", "Exception ignored", "unclosed", "Traceback", "Reconnect")


@pytest.mark.distributed
async def test_failed_connects_leave_nothing_behind() -> None:
    vhost = amqp_url(process_vhost())
    taken = f"t{uuid.uuid4().hex[:10]}.fanout"
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never speaks AMQP: a hung broker
    hung = f"amqp://guest:guest@127.0.0.1:{listener.getsockname()[1]}/"
    with socket.create_server(("127.0.0.1", 0)) as closed:
        refused = f"amqp://guest:guest@127.0.0.1:{closed.getsockname()[1]}/"  # nothing listens once closed
    connection = await aio_pika.connect(vhost)
    try:  # an exchange of that name but another type: the declare fails after the connection opened
        await (await connection.channel()).declare_exchange(taken, aio_pika.ExchangeType.FANOUT, auto_delete=True)
        cases = {
            "ChannelPreconditionFailed": (vhost, taken),
            "ProbableAuthenticationError": (vhost.replace("guest:guest@", "guest:wrong@"), "x"),
            "AMQPConnectionError": (refused, "x"),
            "TimeoutError": (hung, "x"),
        }
        for error, (url, exchange) in cases.items():
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-W", "always::ResourceWarning", "-c", FAILING_CONNECT, url, exchange],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.stdout.split() == ["async", error, "blocking", error, "done"], result.stdout + result.stderr
            assert not [marker for marker in LEFTOVERS if marker in result.stderr], (error, result.stderr)
    finally:
        listener.close()
        await connection.close()


@pytest.mark.distributed
async def test_a_stalled_broker_is_a_timeout_not_a_hang() -> None:
    async with environment() as env, proxied(env["HUB_AMQP_URL"]) as proxy:
        url = via(env["HUB_AMQP_URL"], proxy.port)
        # no hub bound a queue in this test: mandatory would make every publish Unroutable
        publisher = Publisher(url, exchange=env["HUB_EXCHANGE"], timeout=0.5, mandatory=False)
        await publisher.connect()
        proxy.stall()
        with pytest.raises(TimeoutError):
            await publisher.publish(1, "stalled")
        with pytest.raises(TimeoutError):
            await publisher.publish_many([{"user": 1, "data": "stalled"}])
        proxy.restore()
        await publisher.publish(1, "flowing again")  # the same connection, once the broker answers
        await publisher.close()


# ------------------------------------------------------------------ the README's Python, as written


def readme_python(marker: str) -> str:
    """The README's ```python block containing ``marker``."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"expected one Python block with {marker!r} in README.md, found {len(blocks)}"
    return blocks[0]


async def test_the_readme_token_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_JWT_SECRET", SECRET)
    recipe: dict[str, Any] = {}
    exec(readme_python("mint_token"), recipe)
    async with run_hub("memory") as hub:
        client = await hub.connect(token=recipe["hub_token"](42))  # an integer id, as most apps have
        assert (client.connected["user"], client.connected["topics"]) == ("42", ["user.42"])
        team = await hub.connect(token=recipe["hub_token"]("u-9", ["team.7"]))
        assert (team.connected["user"], team.connected["topics"]) == ("u-9", ["user.u-9", "team.7"])
        await client.close()
        await team.close()


@pytest.mark.distributed
async def test_the_readme_publishing_example() -> None:
    """Run in its own interpreter with only the AMQP_URL line pointed at a fresh vhost."""
    example = readme_python("BlockingPublisher")
    url_line = re.compile(r'^AMQP_URL = "amqp://[^"]*"', re.M)
    assert url_line.search(example), example
    async with (
        fresh_vhost("readme") as url,
        environment() as env,
        run_hub("distributed", env={**env, **default_names(url)}) as hub,
    ):
        client = await hub.connect("42")
        script = url_line.sub(f"AMQP_URL = {url!r}", example)
        script += "\nimport asyncio\nprint(asyncio.run(notify(42, 'from asyncio')))\npublisher.close()\n"
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stderr == ""
        frames = await client.notifications(3)
        assert [n["data"] for n in frames] == [
            {"text": "Your order shipped"},
            {"code": "493817"},
            {"text": "from asyncio"},
        ]
        assert (frames[0]["id"], frames[2]["id"]) == ("order-1234-shipped", result.stdout.strip())
        await client.close()
