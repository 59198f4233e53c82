"""hub.amqp_decode without a server: frames in, properties and problems out."""

from __future__ import annotations

import contextlib
import datetime
import struct
from decimal import Decimal
from typing import Any

import pamqp.frame
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands, exceptions, header

from hub import amqp_decode
from hub.amqp_decode import DecodedHeader, problems, unmarshal_header
from tests import raw_amqp as raw

amqp_decode.install()
_stock_header = header.ContentHeader


def stock(frame_data: bytes) -> header.ContentHeader:
    """pamqp's own decoding of a content header payload."""
    content_header = _stock_header()
    content_header.unmarshal(frame_data)
    return content_header


def payload(props: bytes, body_size: int = 3) -> bytes:
    """A content header frame's payload: class, weight, body size, then the properties."""
    return struct.pack(">HHQ", 60, 0, body_size) + props


def decoded(props: bytes) -> DecodedHeader:
    result = unmarshal_header(payload(props))
    assert isinstance(result, DecodedHeader)
    return result


# ------------------------------------------------------------------ same values as pamqp

_keys = st.text(st.characters(codec="utf-8"), max_size=20)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=32),  # pamqp encodes floats as single precision
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.integers(0, 2**31 - 1).map(lambda n: Decimal(n).scaleb(-2)),
    st.datetimes(
        min_value=datetime.datetime(1971, 1, 1),
        max_value=datetime.datetime(2100, 1, 1),
        timezones=st.just(datetime.UTC),
    ).map(lambda d: d.replace(microsecond=0)),
    st.binary(max_size=10).map(bytearray),
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4), max_leaves=20
)
_short = st.text(st.characters(codec="utf-8"), max_size=40).filter(lambda s: len(s.encode()) <= 255)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    content_type=st.none() | _short,
    message_id=st.none() | _short,
    headers=st.none() | st.dictionaries(_keys, _values, max_size=6),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 9),
    app_id=st.none() | _short,
)
def test_same_values_as_pamqp_for_what_pamqp_reads(**fields: Any) -> None:
    properties = commands.Basic.Properties(**fields)
    frame = pamqp.frame.marshal(header.ContentHeader(body_size=7, properties=properties), 1)
    frame_data = frame[7:-1]
    ours, theirs = unmarshal_header(frame_data), stock(frame_data)
    assert problems(ours) == ()
    assert (ours.class_id, ours.weight, ours.body_size) == (theirs.class_id, theirs.weight, theirs.body_size)
    for name in commands.Basic.Properties.__slots__:
        mine, pamqps = getattr(ours.properties, name), getattr(theirs.properties, name)
        assert mine == pamqps, name
        assert repr(mine) == repr(pamqps), name  # same types all the way down


def test_installed_in_pamqp_frame_decoding() -> None:
    amqp_decode.install()  # idempotent
    frame = raw._frame(2, 1, payload(raw.properties(message_id=b"\xff\xfe")))
    consumed, channel, content_header = pamqp.frame.unmarshal(frame)
    assert (consumed, channel) == (len(frame), 1)
    assert problems(content_header) == ("message_id: not UTF-8 (b'\\xff\\xfe')",)


# ------------------------------------------------------------------ what pamqp refuses


@pytest.mark.parametrize("name", sorted(raw.SHORT_STRINGS))
def test_a_short_string_that_is_not_utf8(name: str) -> None:
    after = {"app_id": b"after"} if name != "app_id" else {}
    result = decoded(raw.properties(**{name: b"ok\xff", **after}))
    assert problems(result) == (f"{name}: not UTF-8 (b'ok\\xff')",)
    value = getattr(result.properties, name)
    assert value.encode("utf-8", "surrogateescape") == b"ok\xff"  # the bytes stay recoverable
    if name != "app_id":
        assert result.properties.app_id == "after"  # what follows is read in place


def test_a_header_key_that_is_not_utf8() -> None:
    result = decoded(raw.properties(headers=raw.table({b"\xff": b"t\x01", b"ok": b"t\x00"}), message_id=b"m"))
    assert problems(result) == ("headers: not UTF-8 (b'\\xff')",)
    assert result.properties.headers == {"\udcff": True, "ok": False}
    assert result.properties.message_id == "m"


def test_a_header_value_that_is_not_utf8_stays_bytes_as_in_pamqp() -> None:
    result = decoded(raw.properties(headers=raw.table({b"k": b"S" + raw.long_str(b"\xff")})))
    assert problems(result) == ()
    assert result.properties.headers == {"k": b"\xff"}


def test_a_timestamp_out_of_range() -> None:
    result = decoded(raw.properties(timestamp=2**63, message_id=b"m"))
    assert problems(result) == ("timestamp: timestamp out of range (9223372036854775808)",)
    assert result.properties.timestamp is None
    assert result.properties.message_id == "m"
    in_table = decoded(raw.properties(headers=raw.table({b"t": b"T" + struct.pack(">Q", 2**64 - 1)})))
    assert problems(in_table) == ("headers['t']: timestamp out of range (18446744073709551615)",)


def test_a_table_nested_past_the_stack_is_cut_not_recursed() -> None:
    with pytest.raises(RecursionError):  # what ends aiormq's frame reader, and the connection
        stock(payload(raw.properties(headers=raw.nested_table(5000))))
    result = decoded(raw.properties(headers=raw.nested_table(5000), message_id=b"after"))
    (problem,) = problems(result)
    assert problem.endswith(f": nested deeper than {amqp_decode.MAX_DEPTH}")
    assert result.properties.message_id == "after"
    assert problems(decoded(raw.properties(headers=raw.nested_table(amqp_decode.MAX_DEPTH - 1)))) == ()


def test_too_many_fields_are_cut() -> None:
    table = raw.table({b"%d" % i: b"V" for i in range(30_000)})
    result = decoded(raw.properties(headers=table, message_id=b"after"))
    assert problems(result) == (f"headers: more than {amqp_decode.MAX_FIELDS} fields",)
    assert len(result.properties.headers) == amqp_decode.MAX_FIELDS
    assert result.properties.message_id == "after"


def test_an_unknown_field_type_cuts_its_table() -> None:
    table = raw.table({b"a": b"t\x01", b"b": b"Z\x00\x00", b"c": b"t\x01"})
    result = decoded(raw.properties(headers=table, message_id=b"after"))
    assert problems(result) == ("headers['b']: unknown field type b'Z'",)
    assert result.properties.headers == {"a": True}
    assert result.properties.message_id == "after"


def test_every_field_type() -> None:
    table = raw.table(
        {
            b"b": b"b\xff",
            b"B": b"B\xff",
            b"s": b"s\xff\xfe",
            b"u": b"u\xff\xfe",
            b"I": b"I" + struct.pack(">i", -5),
            b"i": b"i" + struct.pack(">I", 2**32 - 1),
            b"l": b"l" + struct.pack(">q", -(2**63)),
            b"L": b"L" + struct.pack(">q", 2**63 - 1),
            b"f": b"f" + struct.pack(">f", 1.5),
            b"d": b"d" + struct.pack(">d", -2.25),
            b"D": b"D\x02" + struct.pack(">I", 12345),
            b"x": b"x" + raw.long_str(b"\x00\x01"),
            b"V": b"V",
            b"A": b"A" + raw.long_str(b"t\x01S" + raw.long_str(b"z")),
        }
    )
    data = payload(raw.properties(headers=table))
    ours = unmarshal_header(data)
    assert problems(ours) == ()
    assert ours.properties.headers == stock(data).properties.headers
    assert ours.properties.headers["D"] == Decimal("123.45")


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_unmarshaling_exception(props: bytes) -> None:
    with contextlib.suppress(exceptions.UnmarshalingException):  # a truncated frame: RabbitMQ never sends one
        unmarshal_header(payload(props))


def test_a_truncated_frame_still_raises() -> None:
    with pytest.raises(exceptions.UnmarshalingException):
        unmarshal_header(payload(raw.properties(message_id=b"abc"))[:-1])


# ------------------------------------------------------------------ method frames


def test_a_deliver_with_a_routing_key_that_is_not_utf8() -> None:
    method = struct.pack(">HH", 60, 60) + raw.short_str(b"ctag") + struct.pack(">Q", 7) + b"\x01"
    method += raw.short_str(b"notifications") + raw.short_str(b"user.\xff")
    _, _, deliver = pamqp.frame.unmarshal(raw._frame(1, 3, method))
    assert isinstance(deliver, commands.Basic.Deliver)
    assert (deliver.consumer_tag, deliver.delivery_tag, deliver.redelivered) == ("ctag", 7, True)
    assert deliver.exchange == "notifications"
    assert deliver.routing_key.encode("utf-8", "surrogateescape") == b"user.\xff"


def test_a_method_frame_that_is_broken_otherwise_still_raises() -> None:
    method = struct.pack(">HH", 60, 60) + raw.short_str(b"ctag")  # truncated
    with pytest.raises(exceptions.UnmarshalingException):
        pamqp.frame.unmarshal(raw._frame(1, 3, method))
