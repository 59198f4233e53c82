"""Deliveries handed to a plain function in the channel's reader: no task per message.

aiormq runs every consumer callback in a task of its own (``Channel._on_deliver_frame``):
per delivery a coroutine, a task, its wrapper and a future-store entry: 12 to 21 % of the hub
process's CPU per notification with history off (docs/benchmarks.md, issue 12). Our
consumers only append the message to a buffer and wake a waiter, which never blocks, so
``consume`` registers them as plain functions, called in order by the task that reads
the channel's frames.

It works by replacing ``_on_deliver_frame`` on the one channel instance (never on the
class) with a function that looks the consumer tag up first: a tag registered here is
read and handed over at once, any other goes through aiormq's own path. With an aiormq
that lacks what this needs (another version), nothing is replaced and every delivery goes
through aiormq's task, exactly as before: slower, never different.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage
from aiormq.tools import awaitable

log = logging.getLogger("hub.rabbitmq")

#: A consumer that cannot block: it must return quickly and never raise (it is logged if it does).
Handler = Callable[[DeliveredMessage], None]

#: The attribute of a hooked channel holding its handlers by consumer tag: they live and
#: die with the channel (a side table keyed by channel could keep a closed one alive).
_HANDLERS = "_hub_direct_handlers"


async def consume(
    channel: aiormq.abc.AbstractChannel,
    queue: str,
    handler: Handler,
    *,
    consumer_tag: str,
    no_ack: bool = False,
) -> None:
    """``basic.consume`` of ``queue`` with ``handler`` called for each delivery, in order,
    in the channel's reader task; raises what ``basic_consume`` raises (nothing is left
    registered then). ``forget`` it when the consumer is cancelled or abandoned."""
    handlers = _install(channel)
    if handlers is not None:
        handlers[consumer_tag] = handler
    try:  # aiormq's own path (a channel not hooked, a forgotten tag) runs it through its own wrapper
        await channel.basic_consume(queue, awaitable(handler), consumer_tag=consumer_tag, no_ack=no_ack)
    except BaseException:
        forget(channel, consumer_tag)
        raise


def forget(channel: aiormq.abc.AbstractChannel, consumer_tag: str) -> None:
    """Stop handing ``consumer_tag``'s deliveries to its handler (idempotent); any that still
    come go to aiormq's own consumer, if the channel has one."""
    handlers: dict[str, Handler] | None = getattr(channel, _HANDLERS, None)
    if handlers is not None:
        handlers.pop(consumer_tag, None)


def redirect(channel: aiormq.abc.AbstractChannel, consumer_tag: str, handler: Handler) -> bool:
    """Hand the deliveries of ``consumer_tag`` (a consumer of ``channel``) to ``handler`` from
    now on, without a new ``basic.consume``; False (nothing changed) when the channel could
    not be hooked, or has no such consumer."""
    handlers = _install(channel)
    consumers: dict[str, Any] | None = getattr(channel, "consumers", None)
    if handlers is None or consumers is None or consumer_tag not in consumers:
        return False
    handlers[consumer_tag] = handler
    consumers[consumer_tag] = awaitable(handler)  # aiormq's path, for when it is forgotten
    return True


def registered(channel: aiormq.abc.AbstractChannel) -> int:
    """How many consumers of ``channel`` are served directly (0 when it could not be hooked)."""
    return len(getattr(channel, _HANDLERS, ()))


def _install(channel: aiormq.abc.AbstractChannel) -> dict[str, Handler] | None:
    """The channel's handlers, hooking its delivery path the first time; None when this
    aiormq cannot be hooked."""
    handlers: dict[str, Handler] | None = getattr(channel, _HANDLERS, None)
    if handlers is not None:
        return handlers
    original: Callable[[Any], Awaitable[None]] | None = getattr(channel, "_on_deliver_frame", None)
    content_header: Callable[[], Awaitable[Any]] | None = getattr(channel, "_Channel__get_content_header", None)
    read_content: Callable[[Any, Any], Awaitable[DeliveredMessage]] | None = getattr(channel, "_read_content", None)
    if original is None or content_header is None or read_content is None:
        log.warning("this aiormq cannot hand deliveries over directly: one task per delivery")
        return None
    handlers = {}
    setattr(channel, _HANDLERS, handlers)

    async def on_deliver_frame(frame: Any) -> None:
        handler = handlers.get(frame.consumer_tag)
        if handler is None:
            await original(frame)
            return
        message = await read_content(frame, await content_header())
        try:
            handler(message)
        except Exception:  # as aiormq logs a consumer task's failure: the channel must go on
            log.exception("a consumer failed on a delivery to %s", frame.consumer_tag)

    channel._on_deliver_frame = on_deliver_frame  # type: ignore[attr-defined]
    return handlers
