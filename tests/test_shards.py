"""Sharded sequencing without a broker of its own: the assignment, the names, the missing plugin.

The tests with the consistent-hash plugin run on private nodes (tests/test_shards_cluster.py).
"""

from __future__ import annotations

import itertools

import pytest

from hub.backends.base import BackendUnavailable
from hub.backends.distributed import DistributedBackend
from hub.backends.shard_topology import hash_exchange, ingest_queues, shard_binding
from hub.backends.shards import assign
from hub.settings import ConfigError, Settings
from tests.distributed_env import environment
from tests.harness import API_KEY, SECRET

REPLICAS = [f"hub-{i}:8000" for i in range(8)]


@pytest.mark.parametrize(("shards", "replicas"), list(itertools.product(range(1, 13), range(1, 6))))
def test_every_shard_has_one_replica_and_the_spread_is_even(shards: int, replicas: int) -> None:
    owners = assign(shards, REPLICAS[:replicas])
    assert sorted(owners) == list(range(shards))
    counts = [list(owners.values()).count(r) for r in REPLICAS[:replicas]]
    assert max(counts) - min(counts) <= 1, counts
    assert assign(shards, list(reversed(REPLICAS[:replicas]))) == owners  # the set decides, not the order


def test_no_replicas_no_owners() -> None:
    assert assign(6, []) == {}


def test_a_replica_leaving_moves_its_shards_and_few_others() -> None:
    moved = []
    for first in range(len(REPLICAS) - 2):
        members = REPLICAS[first : first + 3]
        before, after = assign(6, members), assign(6, members[1:])
        assert all(after[s] != members[0] for s in range(6))
        moved.append(sum(1 for s in range(6) if before[s] != after[s]))
    assert max(moved) <= 4, moved  # its own 2, and at most 2 reshuffled to stay even


def test_shard_names() -> None:
    one = Settings(ingest_queue="x.ingest")
    assert ingest_queues(one) == ["x.ingest"]
    assert shard_binding(one) == (one.exchange, "#")
    four = Settings(ingest_queue="x.ingest", ingest_shards=4)
    assert ingest_queues(four) == ["x.ingest.0", "x.ingest.1", "x.ingest.2", "x.ingest.3"]
    assert shard_binding(four)[0] == hash_exchange(four) == "x.ingest.shards"


def test_shards_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="HUB_INGEST_SHARDS"):
        Settings.from_env({"HUB_INGEST_SHARDS": "0"})


@pytest.mark.distributed
async def test_without_the_plugin_start_up_fails_naming_it() -> None:
    """The shared broker has no plugins: a sharded hub refuses to start and says what to enable."""
    async with environment() as env:
        settings = Settings.from_env(
            {**env, "HUB_JWT_SECRET": SECRET, "HUB_API_KEY": API_KEY, "HUB_INGEST_SHARDS": "3"}
        )
        backend = DistributedBackend(settings)
        with pytest.raises(BackendUnavailable, match="rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"):
            await backend.start()
