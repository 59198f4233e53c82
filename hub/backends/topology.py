"""The exchanges and queues the hub declares on RabbitMQ (docs/protocol.md §4-§6).

- ``notifications`` (topic): publishers' exchange; ``notifications.live`` (topic): the
  sequenced notifications sockets bind on; ``hub.presence`` (topic): presence events;
- ``hub.dead`` (fanout exchange and its durable queue): dead letters;
- ``hub.ingest`` (durable, only with history on): bound to ``notifications`` with ``#``,
  consumed by one sequencer at a time (single active consumer), bounded by a message
  TTL (the history TTL: an older notification would be trimmed from history at once)
  and a length (``ingest_max_length``). At the bound the oldest message goes first
  (``x-overflow: drop-head``): the newest notifications are worth the most, and
  publishers keep working while no sequencer runs. Expired and dropped messages go to
  ``hub.dead`` (``x-death`` says why). A priority queue (``x-max-priority``,
  ``HUB_INGEST_MAX_PRIORITY``): urgent notifications leave a backlog first. With
  ``HUB_INGEST_QUEUE_TYPE=quorum`` a quorum queue instead (``x-queue-type``), replicated
  over a RabbitMQ cluster, without priorities.

Queue arguments cannot change once a queue exists: RabbitMQ refuses the declare
(PRECONDITION_FAILED) and closes the channel. A ``hub.ingest`` declared by an older hub
(no TTL, no length) or with other bounds is used as it is, with one warning saying how
to bound it (a policy; docs/protocol.md §5).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractQueue, ExchangeType

from hub.settings import Settings
from hubnotify.message import declare_exchange

log = logging.getLogger("hub.topology")
#: Ingest queues already warned about in this process (the warning is said once).
_warned: set[str] = set()


async def declare_topology(channel: AbstractChannel, settings: Settings) -> None:
    """Declare every exchange and queue the hub uses; idempotent (same arguments every time)."""
    # The publishers' exchange is declared by the publish helper too, with these same arguments.
    notifications = await declare_exchange(channel, settings.exchange)
    dead = await channel.declare_exchange(settings.dead_letter, ExchangeType.FANOUT, durable=True)
    dead_queue = await channel.declare_queue(settings.dead_letter, durable=True)
    await dead_queue.bind(dead, "")
    await channel.declare_exchange(settings.live_exchange, ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(settings.presence_exchange, ExchangeType.TOPIC, durable=True)
    if settings.history_enabled and settings.ingest_shards == 1:  # shards: hub/backends/shard_topology.py
        ingest = await declare_ingest(channel, settings)
        await ingest.bind(notifications, "#")


def ingest_arguments(settings: Settings) -> dict[str, Any]:
    """The arguments ``hub.ingest`` is declared with."""
    arguments: dict[str, Any] = {
        "x-single-active-consumer": True,
        "x-dead-letter-exchange": settings.dead_letter,
        "x-max-length": settings.ingest_max_length,
        "x-overflow": "drop-head",
    }
    if settings.history_ttl > 0:
        arguments["x-message-ttl"] = settings.history_ttl * 1000
    if settings.ingest_queue_type == "quorum":
        # Replicated over the cluster's nodes: survives the loss of a minority of them. No
        # x-max-priority (settings refuse a priority with quorum: RabbitMQ 3.10 has none).
        arguments["x-queue-type"] = "quorum"
    elif settings.ingest_max_priority > 0:
        arguments["x-max-priority"] = settings.ingest_max_priority
    return arguments


async def declare_ingest(channel: AbstractChannel, settings: Settings, queue: str | None = None) -> AbstractQueue:
    """Declare ``hub.ingest``, or the ingest queue ``queue`` (a shard), with ``ingest_arguments``
    (see the module docstring for an existing one with other arguments).

    On a robust channel this also makes the channel restore the queue (and its
    consumers) after a reconnect, which a queue merely looked up would not get.
    """
    name = queue or settings.ingest_queue
    arguments = ingest_arguments(settings)
    refusal = await _refused_arguments(channel, name, arguments)
    if refusal is None:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    _warn_once(settings, name, arguments, refusal)
    return await channel.declare_queue(name, passive=True)


def _warn_once(settings: Settings, name: str, arguments: dict[str, Any], refusal: str) -> None:
    """One line saying the queue is used as it is, and the policy that bounds it anyway."""
    if name in _warned:
        return
    _warned.add(name)
    policy = {"max-length": settings.ingest_max_length, "overflow": "drop-head"}
    if "x-message-ttl" in arguments:
        policy["message-ttl"] = arguments["x-message-ttl"]
    log.warning(
        "%s exists with other arguments than this hub's (%s); using it as it is. To bound it "
        "without downtime: rabbitmqctl set_policy hub-ingest '^%s$' '%s' --apply-to queues "
        "(docs/protocol.md §5)",
        name,
        refusal,
        re.escape(name),
        json.dumps(policy, separators=(",", ":")),
    )


async def _refused_arguments(channel: AbstractChannel, queue: str, arguments: dict[str, Any]) -> str | None:
    """Declare ``queue`` on a throwaway channel; the broker's refusal text, or None if it took it.

    A refused declare closes its channel, so it is tried where that costs nothing.
    """
    underlay = await channel.get_underlay_channel()
    probe = await underlay.connection.channel(publisher_confirms=False)
    try:
        await probe.queue_declare(queue, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        return str(exc.args[0] if exc.args else exc)
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
            await probe.close()
    return None
