"""The shipped RabbitMQ definitions (docker/rabbitmq-definitions.json), made loadable for tests.

The file ships its users without passwords; ``with_passwords`` fills in a hash for each
(RabbitMQ's ``rabbit_password_hashing_sha256``) so one ``rabbitmqctl import_definitions``
creates users that can log in, exactly with the shipped permissions.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

DEFINITIONS = Path(__file__).parent.parent / "docker" / "rabbitmq-definitions.json"
#: The hub's own names, which the definitions' permission patterns are written for.
DEFAULT_NAMES = {
    "HUB_EXCHANGE": "notifications",
    "HUB_LIVE_EXCHANGE": "notifications.live",
    "HUB_INGEST_QUEUE": "hub.ingest",
    "HUB_DEAD_LETTER": "hub.dead",
    "HUB_PRESENCE_EXCHANGE": "hub.presence",
}


def shipped() -> dict[str, Any]:
    definitions: dict[str, Any] = json.loads(DEFINITIONS.read_text())
    return definitions


def password_hash(password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def with_passwords(passwords: dict[str, str]) -> dict[str, Any]:
    """The shipped definitions with each user's password set (every user must be in ``passwords``)."""
    definitions = shipped()
    for user in definitions["users"]:
        user["password_hash"] = password_hash(passwords[user["name"]])
    return definitions
