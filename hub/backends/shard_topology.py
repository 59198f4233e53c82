"""The sharded ingest (``HUB_INGEST_SHARDS`` > 1) on RabbitMQ (docs/protocol.md §5).

With one shard the hub declares ``hub.ingest`` as always (``hub.backends.topology``). With
N shards it declares instead:

- ``<ingest>.shards``: an ``x-consistent-hash`` exchange (RabbitMQ's
  ``rabbitmq_consistent_hash_exchange`` plugin, shipped with 3.10), bound to the publishers'
  exchange with ``#``. It hashes the routing key, so one topic (``user.<id>``) always lands
  on the same shard and its notifications keep their order; publishers change nothing.
- ``<ingest>.0`` … ``<ingest>.N-1``: durable queues with the arguments of ``hub.ingest``
  (single active consumer, bounds, priority), each bound to the hash exchange with the
  weight ``SHARD_WEIGHT``.

Why the plugin: RabbitMQ 4.3's core ``x-modulus-hash`` exchange is not in 3.10, and
hashing in the hub would need one more hop (a queue every message crosses twice). The
consistent hash also moves only about 1/N of the topics when a shard is added. The
plugin must be enabled on every node (``rabbitmq-plugins enable
rabbitmq_consistent_hash_exchange``); without it the broker refuses the exchange type
with a connection error, which ``declare_shards`` turns into one line saying so.

A ``hub.ingest`` left from a one-shard deployment is unbound from the publishers'
exchange (it would otherwise fill with a copy of everything), and so are shard queues
beyond N left from a deployment with more shards (they would fill with a share nobody
sequences); what they still hold is sequenced by replicas still running with the old
count (docs/operations.md, Sharded sequencing).
"""

from __future__ import annotations

import contextlib
import logging

import aiormq
from aio_pika.abc import AbstractChannel

from hub.backends.base import BackendUnavailable
from hub.backends.topology import declare_ingest
from hub.settings import Settings

log = logging.getLogger("hub.shards")

HASH_EXCHANGE_TYPE = "x-consistent-hash"
PLUGIN = "rabbitmq_consistent_hash_exchange"
#: Points each shard queue gets on the hash ring: with 1 the topics spread very unevenly
#: over a few queues; 100 evens them out (bench/shards.py prints the spread).
SHARD_WEIGHT = "100"


def hash_exchange(settings: Settings) -> str:
    """The consistent-hash exchange between the publishers' exchange and the shard queues."""
    return f"{settings.ingest_queue}.shards"


def shard_queue(settings: Settings, shard: int) -> str:
    """The ingest queue of ``shard`` (``hub.ingest`` itself with one shard)."""
    if settings.ingest_shards == 1:
        return settings.ingest_queue
    return f"{settings.ingest_queue}.{shard}"


def ingest_queues(settings: Settings) -> list[str]:
    """Every ingest queue, shard 0 first."""
    return [shard_queue(settings, shard) for shard in range(settings.ingest_shards)]


def shard_binding(settings: Settings) -> tuple[str, str]:
    """What a shard queue is bound to: (exchange, routing key = weight on the hash ring)."""
    if settings.ingest_shards == 1:
        return settings.exchange, "#"
    return hash_exchange(settings), SHARD_WEIGHT


async def declare_shards(channel: AbstractChannel, settings: Settings) -> None:
    """Declare the hash exchange and every shard queue (see the module docstring); idempotent.

    Raises BackendUnavailable naming the plugin when the broker does not know the exchange
    type (the broker closes the whole connection then: call this at start-up only).
    """
    try:
        ring = await channel.declare_exchange(hash_exchange(settings), HASH_EXCHANGE_TYPE, durable=True)
    except aiormq.exceptions.ConnectionCommandInvalid as exc:
        raise BackendUnavailable(
            f"HUB_INGEST_SHARDS={settings.ingest_shards} needs RabbitMQ's {PLUGIN} plugin, which this "
            f"broker does not have enabled ({exc}); enable it on every node: rabbitmq-plugins enable {PLUGIN}"
        ) from exc
    await ring.bind(settings.exchange, "#")
    exchange, weight = shard_binding(settings)
    for queue in ingest_queues(settings):
        declared = await declare_ingest(channel, settings, queue)
        await declared.bind(exchange, weight)
    await _unbind(channel, settings.ingest_queue, settings.exchange, "#")
    shard = settings.ingest_shards
    while await _unbind(channel, f"{settings.ingest_queue}.{shard}", exchange, weight):
        shard += 1


async def _unbind(channel: AbstractChannel, queue: str, exchange: str, routing_key: str) -> bool:
    """Unbind ``queue``, left from a deployment with another shard count, if it exists;
    whether it did (its waiting messages are sequenced by replicas still running with that
    count: docs/operations.md, Sharded sequencing).

    On a throwaway channel: a queue that does not exist makes the broker close the channel.
    """
    underlay = await channel.get_underlay_channel()
    probe = await underlay.connection.channel(publisher_confirms=False)
    try:
        declared = await probe.queue_declare(queue, passive=True)
        await probe.queue_unbind(queue, exchange, routing_key)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
            await probe.close()
    log.warning(
        "%s unbound from %s: not an ingest queue of this HUB_INGEST_SHARDS; %d messages wait in it for "
        "replicas still running with another shard count (docs/operations.md, Sharded sequencing)",
        queue,
        exchange,
        declared.message_count or 0,
    )
    return True
