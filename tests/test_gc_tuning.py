"""``hub.gc_tuning``: the collector set-up of a ``hub serve`` process (docs/operations.md §2)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hub import gc_tuning


@pytest.fixture
def restored() -> Iterator[None]:
    """Leave the test process's collector as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_tune_raises_only_the_young_threshold() -> None:
    gc.set_threshold(700, 10, 10)
    gc_tuning.tune()
    assert gc.get_threshold() == (gc_tuning.YOUNG, 10, 10)


@pytest.mark.usefixtures("restored")
def test_freeze_keeps_what_lives_now_out_of_later_collections() -> None:
    kept = [[] for _ in range(1000)]  # container objects alive at the freeze
    gc_tuning.freeze()
    assert gc.get_freeze_count() >= len(kept)
    collected = {id(o) for o in gc.get_objects()}  # generations 0-2: what a collection walks
    assert not any(id(x) in collected for x in kept)
