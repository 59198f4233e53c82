"""Cost per message of the strict wire format, before and after, in one run (no server).

"Before" is the code this replaced, kept here verbatim in spirit: pamqp's own content
header decoding, ``json.loads`` / ``msgpack.unpackb`` for bodies (hub/backends/amqp_codec.py
until the wire module), ``json.loads`` for live frames. "After" is ``hub.amqp_decode`` and
``hub.wire``. Each figure is the best of several rounds, in µs per message.

    .venv/bin/python scripts/bench_wire.py
"""

from __future__ import annotations

import json
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack
from pamqp import commands, header

from hub import amqp_decode, wire
from hub.protocol import json_dumps

ROUNDS = 7


def best(call: Callable[[], object], number: int = 20_000) -> float:
    """µs per call, best of ``ROUNDS``."""
    return min(timeit.repeat(call, number=number, repeat=ROUNDS)) / number * 1e6


def header_payload(properties: commands.Basic.Properties) -> bytes:
    frame = header.ContentHeader(body_size=100, properties=properties).marshal()
    return frame


def stock_header(data: bytes) -> header.ContentHeader:
    content_header = header.ContentHeader()
    content_header.unmarshal(data)
    return content_header


def old_decode_body(body: bytes, content_type: str | None) -> tuple[str, Any]:
    """hub/backends/amqp_codec.py's decode_body (lenient) as it was."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in wire.MSGPACK_TYPES:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True)
        return json_dumps(value), value
    text = body.decode("utf-8")
    if not kind.startswith("text/"):
        try:
            return text, json.loads(text)
        except ValueError:
            pass
    return json_dumps(text), text


def main() -> None:
    now = 1_750_000_000_000
    typical = commands.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="0123456789abcdef0123456789abcdef",
        headers={"ts": now},
    )
    x_death = commands.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="m-1",
        headers={
            "ts": now,
            "x-death": [{"count": 1, "reason": "rejected", "queue": "q", "exchange": "", "routing-keys": ["q"]}],
        },
    )
    data = {"type": "order.shipped", "order": 1234, "text": "Your order shipped", "items": [1, 2, 3]}
    body_json = json.dumps(data).encode()
    body_msgpack = msgpack.packb(data)
    live = wire.json_frame("0123456789abcdef", "user.42", "1750000000000-0", now, body_json.decode()).encode()

    rows: list[tuple[str, float, float]] = []
    for name, properties in (("typical publisher", typical), ("with x-death", x_death)):
        payload = header_payload(properties)
        rows.append(
            (
                f"content header ({name})",
                best(lambda p=payload: stock_header(p)),  # type: ignore[misc]
                best(lambda p=payload: amqp_decode.unmarshal_header(p)),  # type: ignore[misc]
            )
        )
    rows.append(
        (
            "JSON body (application/json)",
            best(lambda: old_decode_body(body_json, "application/json")),
            best(lambda: wire.decode_body(body_json, "application/json")),
        )
    )
    rows.append(
        (
            "msgpack body",
            best(lambda: old_decode_body(body_msgpack, "application/msgpack")),
            best(lambda: wire.decode_body(body_msgpack, "application/msgpack")),
        )
    )
    content_header = amqp_decode.unmarshal_header(header_payload(typical))
    rows.append(
        (
            "ingest message read (body + id + ts + topic)",
            best(lambda: old_decode_body(body_json, "application/json")),
            best(lambda: wire.read_publish("user.42", content_header, body_json, now=now)),
        )
    )
    rows.append(("live frame parse (per replica)", best(lambda: json.loads(live)), best(lambda: wire.parse_live(live))))
    deep_json = b"[" * 3000 + b"]" * 3000
    rows.append(
        (
            "refusing JSON nested 3,000 deep",
            float("nan"),  # before: RecursionError, the batch requeued forever
            best(lambda: _refuse(deep_json), number=2_000),
        )
    )
    print(f"{'per message':48} {'before µs':>10} {'after µs':>10}")
    for name, before, after in rows:
        print(f"{name:48} {before:10.2f} {after:10.2f}")


def _refuse(body: bytes) -> None:
    try:
        wire.decode_body(body, "application/json")
    except wire.Refused:
        return


if __name__ == "__main__":
    main()
