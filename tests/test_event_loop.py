"""``HUB_EVENT_LOOP``: which loop ``hub serve`` runs on (hub/server.py ``new_event_loop``)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from hub.server import new_event_loop
from hub.settings import ConfigError, Settings


@pytest.mark.parametrize(("kind", "uv"), [("auto", True), ("uvloop", True), ("asyncio", False)])
def test_the_loop_asked_for_is_the_loop_made(kind: str, uv: bool) -> None:
    assert Settings.from_env({"HUB_EVENT_LOOP": kind}).event_loop == kind
    loop = new_event_loop(kind)
    try:
        assert isinstance(loop, uvloop.Loop) is uv
        assert loop.run_until_complete(asyncio.sleep(0, result="ran")) == "ran"
    finally:
        loop.close()


def test_an_unknown_loop_is_a_configuration_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="HUB_EVENT_LOOP"):
        Settings.from_env({"HUB_EVENT_LOOP": "tokio"})
