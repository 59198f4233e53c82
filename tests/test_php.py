"""The README's PHP examples, run as written with Debian's php-cli against a real hub.

- "Tokens for your users": the firebase/php-jwt snippet mints tokens the hub accepts
  (firebase/php-jwt is vendored in tests/php/, see tests/php/autoload.php).
- php-amqplib publishing (Debian's php-amqplib) is run by tests/test_tls.py: the README's
  producer publishes as the `publisher` user over TLS, which needs a RabbitMQ with a TLS
  listener and the shipped users (a private node there).

A missing ``php`` or php-amqplib fails the test, naming the Debian package.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.harness import SECRET, run_hub
from tests.services import missing

ROOT = Path(__file__).resolve().parent.parent
AUTOLOAD = Path(__file__).resolve().parent / "php" / "autoload.php"
AMQPLIB = Path("/usr/share/php/PhpAmqpLib/autoload.php")


def readme_php(marker: str) -> str:
    """The README's ```php block containing ``marker``."""
    blocks = [b for b in re.findall(r"```php\n(.*?)```", (ROOT / "README.md").read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"expected one PHP block with {marker!r} in README.md, found {len(blocks)}"
    return blocks[0]


def php(tmp_path: Path, snippet: str, prelude: str, epilogue: str = "", env: dict[str, str] | None = None) -> str:
    """Run ``snippet`` (a PHP file of its own) required from a wrapper; its stdout."""
    binary = shutil.which("php")
    if binary is None:
        missing("php is not installed (apt-get install -y php-cli)")
    if "PhpAmqpLib" in snippet and not AMQPLIB.is_file():
        missing(f"php-amqplib is not installed ({AMQPLIB}; apt-get install -y php-amqplib)")
    (tmp_path / "snippet.php").write_text(snippet)
    wrapper = f"<?php\nrequire {json.dumps(str(AUTOLOAD))};\n{prelude}\nrequire __DIR__ . '/snippet.php';\n{epilogue}\n"
    (tmp_path / "wrapper.php").write_text(wrapper)
    result = subprocess.run(
        [binary, str(tmp_path / "wrapper.php")], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result.stdout


async def test_php_token_recipe_is_accepted(tmp_path: Path) -> None:
    out = await asyncio.to_thread(
        php,
        tmp_path,
        readme_php("JWT::encode"),
        prelude="$currentUser = (object) ['id' => 42];  // an integer id, as most PHP apps have",
        epilogue="echo \"\\n\", hub_token('u-9', ['team.7'], 60), \"\\n\";",
        env={"HUB_JWT_SECRET": SECRET},
    )
    endpoint, granted = out.splitlines()
    token = json.loads(endpoint)["token"]  # the endpoint's {"token": ...}, as client-js expects
    async with run_hub("memory") as hub:
        client = await hub.connect(token=token)
        assert (client.connected["user"], client.connected["topics"]) == ("42", ["user.42"])
        team = await hub.connect(token=granted)
        assert (team.connected["user"], team.connected["topics"]) == ("u-9", ["user.u-9", "team.7"])
        await hub.publish(topic="team.7", data="minted in PHP")
        assert [n["data"] for n in await team.notifications(1)] == ["minted in PHP"]
        await client.close()
        await team.close()
