"""AMQP frames decoded totally, below aio-pika: a publisher cannot break the hub's connection.

pamqp (under aiormq and aio-pika) refuses frames that RabbitMQ forwards as they came:
a short string that is not UTF-8 (``message_id``, ``content_type``, a routing key, any
of them), a header-table key that is not UTF-8, a ``timestamp`` past the year 9999, a
header table nested deeper than the Python stack. Its exception ends the connection's
reader, so the connection drops, every channel with it, and the message comes back to
do it again (docs/protocol.md §5). Its table decoder is also quadratic (each field
copies the rest of the frame): 30,000 header fields cost 0.4 s of the event loop.

``install()`` replaces two steps of ``pamqp.frame.unmarshal``, process-wide:

- content headers (a message's properties) are decoded here, in one linear pass, with
  the same values pamqp gives for everything pamqp accepts; what it refuses is decoded
  anyway and recorded on the header as ``problems`` (``DecodedHeader``): a bad short
  string becomes text with ``surrogateescape`` (the bytes stay recoverable), a bad
  timestamp ``None``, a table nested deeper than ``MAX_DEPTH`` or holding more than
  ``MAX_FIELDS`` fields, or a field of unknown type, is cut there;
- a method frame pamqp cannot decode (``basic.deliver`` with a non-UTF-8 routing key,
  ``channel.close`` quoting one) is decoded again with ``surrogateescape`` short strings.

Consumers read ``problems(header)`` and dead-letter (``hub.wire``). Long strings in
tables that are not UTF-8 stay ``bytes``, as pamqp already decodes them. Cost: see
``scripts/bench_wire.py`` (a typical publisher's header decodes faster than with pamqp).
"""

from __future__ import annotations

import datetime
import logging
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import pamqp.frame
from pamqp import base, commands, decode, exceptions, header

log = logging.getLogger("hub.amqp")

#: Header tables nested deeper are cut (x-death, the deepest header RabbitMQ writes, is 4 deep).
MAX_DEPTH: Final = 16
#: Fields (all tables and arrays of one message together) decoded at most.
MAX_FIELDS: Final = 1024


class DecodedHeader(header.ContentHeader):
    """A content header and what could not be decoded in it (empty: nothing)."""

    problems: tuple[str, ...] = ()


def problems(content_header: object) -> tuple[str, ...]:
    """What could not be decoded in a message's properties; empty when all of it was."""
    found: tuple[str, ...] = getattr(content_header, "problems", ())
    return found


_strict_method_frame: Callable[[bytes], base.Frame] | None = None


def install() -> None:
    """Make pamqp decode content headers and method frames tolerantly; idempotent."""
    global _strict_method_frame
    if _strict_method_frame is not None:
        return
    _strict_method_frame = pamqp.frame._unmarshal_method_frame
    pamqp.frame._unmarshal_header_frame = unmarshal_header
    pamqp.frame._unmarshal_method_frame = _unmarshal_method


# ------------------------------------------------------------------ content headers

_PROPERTIES: Final = [
    (name, commands.Basic.Properties.flags[name], getattr(commands.Basic.Properties, "_" + name))
    for name in commands.Basic.Properties.__slots__
]
_U8, _U16, _U32, _U64 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
_HEADER = struct.Struct(">HHQ")
#: Fixed-size field types: tag → (struct, size), as pamqp's TABLE_MAPPING decodes them.
_SCALARS: Final = {
    ord(tag): (struct.Struct(fmt), struct.calcsize(fmt))
    for tag, fmt in (
        (b"b", ">b"),
        (b"B", ">B"),
        (b"s", ">h"),
        (b"u", ">H"),
        (b"I", ">i"),
        (b"i", ">I"),
        (b"l", ">q"),
        (b"L", ">q"),
        (b"f", ">f"),
        (b"d", ">d"),
    )
}


def unmarshal_header(frame_data: bytes) -> header.ContentHeader:
    """A content header frame's payload as a ``DecodedHeader``; raises UnmarshalingException
    only when the frame itself is truncated (never for what a publisher put in it)."""
    try:
        class_id, weight, body_size = _HEADER.unpack_from(frame_data, 0)
        offset, flags, word = 12, 0, 0
        while True:  # AMQP 0-9-1 §4.2.6.1: flag words chained by their low bit
            partial = _U16.unpack_from(frame_data, offset)[0]
            offset += 2
            flags |= (partial & 0xFFFE) << (16 * word)
            word += 1
            if not partial & 1:
                break
        reader = _Reader(frame_data, offset)
        properties = commands.Basic.Properties()
        for name, flag, kind in _PROPERTIES:
            if flags & flag:
                setattr(properties, name, reader.property(name, kind))
    except (struct.error, IndexError, ValueError) as exc:
        raise exceptions.UnmarshalingException("ContentHeader", exc) from exc
    content_header = DecodedHeader(weight=weight, body_size=body_size, properties=properties)
    content_header.class_id = class_id
    if reader.problems:
        content_header.problems = tuple(reader.problems)
    return content_header


class _Reader:
    """One pass over a properties payload; every read advances ``offset``."""

    __slots__ = ("data", "fields", "offset", "problems")

    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset
        self.fields = 0
        self.problems: list[str] = []

    def property(self, name: str, kind: str) -> Any:
        if kind == "shortstr":
            return self.short_str(name)
        if kind == "octet":
            value = self.data[self.offset]
            self.offset += 1
            return value
        if kind == "timestamp":
            return self.timestamp(name)
        if kind == "table":
            return self.table(name, 1)
        raise ValueError(f"unexpected property type {kind}")

    def short_str(self, where: str) -> str:
        size = self.data[self.offset]
        start = self.offset + 1
        self.offset = end = start + size
        raw = self.data[start:end]
        if len(raw) != size:
            raise ValueError(f"{where}: short string past the end of the frame")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.problems.append(f"{where}: not UTF-8 ({raw!r:.80})")
            return raw.decode("utf-8", "surrogateescape")

    def timestamp(self, where: str) -> datetime.datetime | None:
        raw = self.data[self.offset : self.offset + 8]
        self.offset += 8
        try:
            return decode.timestamp(raw)[1]
        except (ValueError, OverflowError, OSError):
            self.problems.append(f"{where}: timestamp out of range ({_U64.unpack(raw)[0]})")
            return None

    def table(self, where: str, depth: int) -> dict[str, Any] | None:
        end = self._container_end()
        if depth > MAX_DEPTH:
            self.problems.append(f"{where}: nested deeper than {MAX_DEPTH}")
            self.offset = end
            return None
        table: dict[str, Any] = {}
        while self.offset < end:
            key = self.short_str(where)
            if not self.field(table, key, where, depth, end):
                break
        return table

    def array(self, where: str, depth: int) -> list[Any] | None:
        end = self._container_end()
        if depth > MAX_DEPTH:
            self.problems.append(f"{where}: nested deeper than {MAX_DEPTH}")
            self.offset = end
            return None
        array: list[Any] = []
        index = 0
        while self.offset < end and self.field(array, index, where, depth, end):
            index += 1
        return array

    def _container_end(self) -> int:
        size: int = _U32.unpack_from(self.data, self.offset)[0]
        self.offset += 4
        end = self.offset + size
        if end > len(self.data):
            raise ValueError("table or array longer than the frame")
        return end

    def field(self, into: Any, key: str | int, where: str, depth: int, end: int) -> bool:
        """Decode one tagged value into ``into[key]`` (``where`` names the container, for
        problems); False (and skip to ``end``) when the rest of the container cannot be read."""
        self.fields += 1
        if self.fields > MAX_FIELDS:
            if self.fields == MAX_FIELDS + 1:
                self.problems.append(f"headers: more than {MAX_FIELDS} fields")
            self.offset = end
            return False
        data = self.data
        tag = data[self.offset]
        self.offset += 1
        scalar = _SCALARS.get(tag)
        value: Any
        if scalar is not None:
            value = scalar[0].unpack_from(data, self.offset)[0]
            self.offset += scalar[1]
        elif tag == 0x53:  # S: long string (bytes when not UTF-8, as pamqp does)
            size = _U32.unpack_from(data, self.offset)[0]
            raw = data[self.offset + 4 : self.offset + 4 + size]
            self.offset += 4 + size
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                value = raw
        elif tag == 0x74:  # t: boolean
            value = bool(data[self.offset])
            self.offset += 1
        elif tag == 0x46:  # F: table
            value = self.table(_label(where, key), depth + 1)
        elif tag == 0x41:  # A: array
            value = self.array(_label(where, key), depth + 1)
        elif tag == 0x54:  # T: timestamp
            value = self.timestamp(_label(where, key))
        elif tag == 0x44:  # D: decimal
            places, raw_value = data[self.offset], _U32.unpack_from(data, self.offset + 1)[0]
            value = Decimal(raw_value) * (Decimal(10) ** -places)
            self.offset += 5
        elif tag == 0x78:  # x: byte array
            size = _U32.unpack_from(data, self.offset)[0]
            value = bytearray(data[self.offset + 4 : self.offset + 4 + size])
            self.offset += 4 + size
        elif tag in (0x56, 0x00):  # V: void (and NUL, seen in the wild per pamqp)
            value = None
        else:
            self.problems.append(f"{_label(where, key)}: unknown field type {bytes([tag])!r}")
            self.offset = end
            return False
        if self.offset > end:
            raise ValueError(f"{_label(where, key)}: value past the end of its table")
        if isinstance(into, dict):
            into[key] = value
        else:
            into.append(value)
        return True


def _label(where: str, key: str | int) -> str:
    return f"{where}[{key!r:.40}]"


# ------------------------------------------------------------------ method frames


def _unmarshal_method(frame_data: bytes) -> base.Frame:
    """pamqp's method-frame decoding; when it fails, again with tolerant short strings."""
    assert _strict_method_frame is not None
    try:
        return _strict_method_frame(frame_data)
    except exceptions.UnmarshalingException as exc:
        if not isinstance(exc.__cause__, UnicodeDecodeError):
            raise
        method: base.Frame = commands.INDEX_MAPPING[_U32.unpack_from(frame_data, 0)[0]]()
        _unmarshal_arguments(method, frame_data[4:])
        log.warning("decoded a %s frame with non-UTF-8 short strings: %r", method.name, method)
        return method


def _unmarshal_arguments(method: base.Frame, data: bytes) -> None:
    """``base.Frame.unmarshal`` with short strings decoded with ``surrogateescape``."""
    bit_offset, in_bits = 0, False
    for argument in method.__slots__:
        kind = method.amqp_type(argument)
        if in_bits and (kind != "bit" or bit_offset == 8):
            data, bit_offset, in_bits = data[1:], 0, False
        value: Any
        if kind == "shortstr":
            size = data[0]
            value, consumed = data[1 : 1 + size].decode("utf-8", "surrogateescape"), 1 + size
        elif kind == "bit":
            value, consumed = decode.bit(data, bit_offset)[1], 0
            bit_offset, in_bits = bit_offset + 1, True
        else:
            consumed, value = decode.by_type(data, kind)
        setattr(method, argument, value)
        data = data[consumed:]
