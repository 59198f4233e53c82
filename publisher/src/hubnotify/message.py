"""A publisher's AMQP message, built in one place (docs/protocol.md §4).

``build_message`` makes what every Python publisher sends (the helper, ``hub publish``,
the hub's HTTP API on the distributed backend); ``validate_message_id`` and
``validate_ttl`` are the checks every publish path shares. The hub reads such messages
back with ``hub.wire.read_publish``. ``declare_exchange`` declares the publishers'
exchange with the one set of arguments the hub uses too.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

import aio_pika
from aio_pika.abc import AbstractExchange, ExchangeType

from hubnotify.payload import BadPayload, check, dumps_json

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel
    from pamqp.commands import Basic

#: The publishers' topic exchange (``HUB_EXCHANGE``).
EXCHANGE: Final = "notifications"
#: AMQP short strings (``message_id``) hold at most 255 bytes.
MAX_ID_BYTES: Final = 255
#: The longest ``ttl`` a publish may ask for: a week. Longer is refused, never clamped.
MAX_TTL_SECONDS: Final = 7 * 86_400
#: Priorities a publish may carry (AMQP ``priority``): 0 (default) to 9 (most urgent).
MAX_PRIORITY: Final = 9
TS_HEADER: Final = "ts"
JSON_TYPE: Final = "application/json"


async def declare_exchange(channel: AbstractChannel, name: str = EXCHANGE) -> AbstractExchange:
    """Declare the publishers' exchange ``name``: topic, durable. Idempotent.

    The hub declares it the same way when it starts (``hub.backends.topology``), so
    whichever comes first creates it and the other's declare is a no-op. RabbitMQ
    refuses it (PRECONDITION_FAILED) when an exchange of that name exists with another type.
    """
    return await channel.declare_exchange(name, ExchangeType.TOPIC, durable=True)


def new_id() -> str:
    """A fresh notification id for a message published without one."""
    return uuid.uuid4().hex


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of ``ts`` and of offsets."""
    return time.time_ns() // 1_000_000


def validate_message_id(value: object) -> str:
    """Return ``value`` if it is a usable message id: a string of 1 to 255 UTF-8 bytes,
    without control characters. Raises ValueError saying what was expected."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected 'id' to be a non-empty string, got {value!r:.80}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("expected 'id' to be valid UTF-8 text (no lone surrogates)") from None
    if size > MAX_ID_BYTES:
        raise ValueError(f"expected 'id' of at most {MAX_ID_BYTES} UTF-8 bytes, got {size}")
    if not value.isprintable():
        raise ValueError("expected 'id' without control characters")
    return value


def validate_ttl(value: object) -> float:
    """Return ``value`` if it is a usable ttl in seconds: a finite number, more than 0 and at
    most ``MAX_TTL_SECONDS``. Raises ValueError saying what was expected."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected 'ttl' to be a number of seconds, got {value!r:.80}")
    if not 0 < value <= MAX_TTL_SECONDS:
        raise ValueError(f"expected 'ttl' of more than 0 and at most {MAX_TTL_SECONDS} seconds, got {value!r}")
    return float(value)


def validate_priority(value: object) -> int:
    """Return ``value`` if it is a usable priority: an integer from 0 to ``MAX_PRIORITY``.
    Raises ValueError saying what was expected."""
    if type(value) is not int or not 0 <= value <= MAX_PRIORITY:
        raise ValueError(f"expected 'priority' to be an integer from 0 to {MAX_PRIORITY}, got {value!r:.80}")
    return value


class _Message(aio_pika.Message):
    """An aio-pika message whose ``expiration`` is exactly the milliseconds given (aio-pika's
    own conversion goes through float seconds and can lose one)."""

    __slots__ = ("_expiration_ms",)

    def __init__(self, body: bytes, *, expiration_ms: str | None, **properties: Any) -> None:
        super().__init__(body, **properties)
        self._expiration_ms = expiration_ms

    @property
    def properties(self) -> Basic.Properties:
        properties = super().properties
        properties.expiration = self._expiration_ms
        return properties


def build_message(
    data: Any,
    *,
    message_id: str | None = None,
    ttl: float | None = None,
    priority: int | None = None,
    persistent: bool = True,
) -> tuple[aio_pika.Message, str]:
    """A publisher's message carrying ``data`` (any JSON value), and its id.

    JSON body, ``message_id`` (given, validated, or a new one), ``expiration`` from ``ttl``
    (whole milliseconds, at least 1), ``priority`` (0-9: an urgent notification overtakes a
    backlog waiting to be sequenced; unset means 0), the ``ts`` header (now, in ms). Raises
    ValueError for a bad id, ttl, priority or a value JSON cannot carry strictly (NaN, lone
    surrogates, too deep).
    """
    id = new_id() if message_id is None else validate_message_id(message_id)
    priority = None if priority is None else validate_priority(priority)
    expiration = None if ttl is None else str(max(1, math.ceil(validate_ttl(ttl) * 1000)))
    try:
        check(data)
        body = dumps_json(data).encode()
    except BadPayload as exc:
        raise ValueError(f"expected data JSON can carry: {exc}") from None
    mode = aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
    message = _Message(
        body,
        expiration_ms=expiration,
        content_type=JSON_TYPE,
        message_id=id,
        delivery_mode=mode,
        priority=priority,
        headers={TS_HEADER: now_ms()},
    )
    return message, id
