"""Fixtures shared by every test module."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator

import pytest

from testkit.clustered import shared_clusters, stop_shared_clusters
from testkit.hubs import BACKENDS, WITH_HISTORY, RunningHub, run_hub
from testkit.services import ServiceMissing


@pytest.fixture(params=sorted(BACKENDS))
async def hub(request: pytest.FixtureRequest) -> AsyncIterator[RunningHub]:
    """A running replica, once per registered backend."""
    async with run_hub(request.param) as running:
        yield running


@pytest.fixture(params=sorted(WITH_HISTORY))
async def history_hub(request: pytest.FixtureRequest) -> AsyncIterator[RunningHub]:
    """A running replica, once per backend that keeps history (recovery tests)."""
    async with run_hub(request.param) as running:
        yield running


@pytest.fixture(params=sorted(set(BACKENDS) - WITH_HISTORY))
async def nohistory_hub(request: pytest.FixtureRequest) -> AsyncIterator[RunningHub]:
    """A running replica, once per backend with history off (``HUB_HISTORY_SIZE=0``)."""
    async with run_hub(request.param) as running:
        yield running


@pytest.fixture(params=sorted(BACKENDS))
def backend_name(request: pytest.FixtureRequest) -> str:
    """Each registered backend's name, for tests that start hubs with their own settings."""
    name: str = request.param
    return name


@pytest.fixture(params=sorted(WITH_HISTORY))
def history_backend(request: pytest.FixtureRequest) -> str:
    """Each backend that keeps history, for history tests that start hubs with their own settings."""
    name: str = request.param
    return name


@pytest.fixture(params=sorted(set(BACKENDS) - WITH_HISTORY))
def nohistory_backend(request: pytest.FixtureRequest) -> str:
    """Each backend with history off (``HUB_HISTORY_SIZE=0``)."""
    name: str = request.param
    return name


@pytest.fixture
async def strict_hub(backend_name: str) -> AsyncIterator[RunningHub]:
    """A replica with small limits, so every limit can be reached quickly."""
    async with run_hub(
        backend_name,
        auth_timeout=0.5,
        max_frame_rate=10.0,
        max_connections_per_user=2,
        max_frame_size=2048,
    ) as running:
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    """A missing service fails the test with one line naming it, not a traceback."""
    report = yield
    excinfo = call.excinfo
    if excinfo is not None and excinfo.errisinstance(ServiceMissing) and isinstance(report, pytest.TestReport):
        report.longrepr = str(excinfo.value)
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``clustered`` backend runs the contract suite (modules marked ``contract``) and
    the cluster tests written for it; the other modules run on the single-node backends,
    whose code paths are the same, so they do not pay a cluster's minutes twice.
    ``HUB_TEST_CLUSTERED=all`` runs every module on it too."""
    if os.environ.get("HUB_TEST_CLUSTERED") == "all":
        return
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_cluster = callspec is not None and "clustered" in callspec.params.values()
        (dropped if on_cluster and item.get_closest_marker("contract") is None else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_collection_finish(session: pytest.Session) -> None:
    """The ``clustered`` backend's clusters start once collected tests need them: here, before
    the first test, so their start-up (tens of seconds) counts against no test's timeout."""
    if any("[clustered" in item.nodeid for item in session.items):
        shared_clusters()


def pytest_sessionfinish() -> None:
    """The ``clustered`` backend's Redis and RabbitMQ clusters end with the session."""
    stop_shared_clusters()
