"""Payload values from outside, parsed strictly (docs/protocol.md §4, §8).

Everything a publisher or a client sends is hostile until checked here. What a value the
hub accepts may be (no ``NaN``, no lone surrogates, string keys, integers msgpack can
carry, at most ``MAX_DEPTH`` deep, only JSON types) is ``check``, defined once in the
publish helper (``hubnotify.payload``: publishers check before they send) and re-exported
here with ``BadPayload``, ``dumps_json`` and the bounds. This module adds the strict
decoders: msgpack ``bin`` and extension types are refused too.

``loads_json`` and ``loads_msgpack`` raise ``BadPayload`` with what was expected and
what came; nothing else escapes them. ``dumps_json`` is the one compact JSON encoder.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

from hubnotify.payload import MAX_DEPTH, MAX_INT, MIN_INT, BadPayload, check, dumps_json

__all__ = ["MAX_DEPTH", "MAX_INT", "MIN_INT", "BadPayload", "check", "dumps_json", "loads_json", "loads_msgpack"]


def _no_constant(name: str) -> Any:
    raise BadPayload(f"expected finite numbers, got {name}")


_decoder = json.JSONDecoder(parse_constant=_no_constant)


def loads_json(text: str | bytes) -> Any:
    """Parse JSON text (UTF-8 when bytes) into a checked value, or raise BadPayload."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadPayload(f"expected UTF-8 JSON text, got {exc}") from None
    try:
        # Deep input stops the C decoder at the interpreter's recursion limit (a caught
        # RecursionError, no crash); ``check`` then applies MAX_DEPTH to what parsed.
        value = _decoder.decode(text)
    except BadPayload:
        raise
    except RecursionError:
        raise BadPayload(f"expected values nested at most {MAX_DEPTH} deep") from None
    except ValueError as exc:
        raise BadPayload(f"expected JSON, got unreadable JSON ({exc})") from None
    check(value)
    return value


def loads_msgpack(data: bytes) -> Any:
    """Parse a msgpack document into a checked value, or raise BadPayload."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0)
    except BadPayload:
        raise
    except Exception as exc:  # msgpack raises several unrelated types, RecursionError included
        raise BadPayload(f"expected msgpack, got unreadable msgpack ({type(exc).__name__}: {exc})") from None
    check(value)
    return value
