"""What to do when a service or tool a test needs is missing: fail, naming it.

``make test`` installs the tools and starts RabbitMQ and Redis, so a missing one is a
broken environment, not a reason to pass quietly: the test fails with what is missing
and how to get it (in CI and on a developer's machine alike). ``testkit`` raises
``ServiceMissing`` with the same message; tests/conftest.py reports it the same way.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

from testkit.services import ServiceMissing


def missing(what: str) -> NoReturn:
    """Fail the current test because ``what`` (a service or tool, and how to get it) is missing."""
    pytest.fail(str(ServiceMissing(what)), pytrace=False)
