"""What crosses AMQP, built and parsed in one place (docs/protocol.md §4, §5).

This module starts with the checks every publish path shares (the HTTP API, the
publish helper, the broker): a message id and a ttl that RabbitMQ will take.
"""

from __future__ import annotations

import math
from typing import Final

#: AMQP short strings (``message_id``) hold at most 255 bytes.
MAX_ID_BYTES: Final = 255
#: The longest ``ttl`` a publish may ask for: a week. Longer is refused, never clamped.
MAX_TTL_SECONDS: Final = 7 * 86_400


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
