"""The payload values the hub carries (docs/protocol.md §4, §8): the one strict check.

A value that passes ``check`` can be encoded to JSON text that every ``JSON.parse``
reads back, and to msgpack, without an exception on any later hop:

- no ``NaN``, ``Infinity`` or ``-Infinity`` (``JSON.parse`` throws on them);
- no lone surrogates in strings or keys (``"\\ud800"``: not encodable as UTF-8, so a
  socket write would fail for every socket of the user);
- map keys are strings (JSON cannot carry others);
- integers within msgpack's range (-2**63 to 2**64-1);
- nesting at most ``MAX_DEPTH`` deep (recursive encoders and decoders overflow the
  stack on deep input; real notifications are a few levels deep);
- only JSON types: maps, lists, strings, numbers, booleans, null.

A publisher checks before it sends (so a mistake is an exception in the caller, not a
dead letter later); the hub checks again whatever arrives (``hub.payload`` adds the
strict JSON and msgpack decoders). ``dumps_json`` is the one compact JSON encoder.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

MAX_DEPTH: Final = 32
#: The integers msgpack can encode (a msgpack socket could not be sent a larger one).
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**64 - 1

#: Compact UTF-8 JSON, the form of every JSON frame and stored JSON payload.
dumps_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class BadPayload(ValueError):
    """A payload the hub refuses; the message says what was expected and what came."""


def check(value: Any) -> None:
    """Raise BadPayload unless ``value`` is a JSON value within the rules of this module.

    Iterative (no recursion), so a value built deeper than the stack allows is refused,
    not crashed on.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is str:
            _check_text(item)
        elif kind is int:
            if not MIN_INT <= item <= MAX_INT:
                raise BadPayload(f"expected integers msgpack can carry (-2**63 to 2**64-1), got {item}")
        elif item is None or kind is bool:
            continue
        elif kind is float:
            if not math.isfinite(item):
                raise BadPayload(f"expected finite numbers, got {item!r}")
        elif kind is dict or kind is list:
            if depth > MAX_DEPTH:
                raise BadPayload(f"expected values nested at most {MAX_DEPTH} deep")
            if kind is dict:
                for key, child in item.items():
                    if type(key) is not str:
                        raise BadPayload(f"expected string map keys, got {type(key).__name__}")
                    _check_text(key)
                    push((child, depth + 1))
            else:
                for child in item:
                    push((child, depth + 1))
        elif kind is tuple:  # msgpack never yields tuples; Python callers might pass one
            push((list(item), depth))
        else:
            raise BadPayload(f"expected a JSON value, got {kind.__name__}")


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadPayload("expected text without lone surrogates (\\ud800-\\udfff)") from None
