"""Random and mutated frames against live sessions: the one close code the protocol names, and
the hub serves on.

``expected_close`` is a model of docs/protocol.md §3 and §8, written from the text, not
from the hub's code: for any frame it says which close code must follow, or None when the
frame is acceptable. Where a frame has several faults the model checks, as the hub does,
the frame's own fields before its place in the conversation: its ``type``, the form of
its ``token`` (4001), its ``since`` (4002), then the token's signature (4001) and what
the token grants (4003).
The explicit examples are hostile inputs that once crashed a session (1011) or slipped
through; each has exactly one right answer.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub.codes import CloseCode
from testkit import Client, RunningHub, make_token

VALID_TOKEN = make_token("fuzz", ttl=3600)
GRANTED = {"user.fuzz"}
MAX_TOKEN_LENGTH = 8192  # docs/protocol.md §3: the token rides in the first frame
MAX_SINCE_TOPICS = 64
MAX_DEPTH = 32  # nesting of a frame (COMMON: payloads and frames are parsed with bounded depth)
MAX_FRAME = 65_536  # HUB_MAX_FRAME_SIZE default: larger is 1009
TOPIC = re.compile(r"[A-Za-z0-9_-]{1,128}(\.[A-Za-z0-9_-]{1,128}){0,7}")  # §2, at most 8 segments
OFFSET = re.compile(r"([0-9]+)-([0-9]+)")  # §5: <ms>-<seq>, ASCII digits, each below 2^64

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

valid_connect = {"type": "connect", "token": VALID_TOKEN, "since": {"user.fuzz": "1-0"}}


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame with one field replaced, removed or added."""
    frame: dict[str, Any] = dict(
        draw(st.sampled_from([valid_connect, {"type": "refresh", "token": VALID_TOKEN}, {"type": "pong"}]))
    )
    key = draw(st.sampled_from(["type", "token", "since", "extra"]))
    action = draw(st.sampled_from(["replace", "remove"]))
    if action == "remove":
        frame.pop(key, None)
    else:
        frame[key] = draw(json_values)
    return frame


first_frames = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(json.dumps),
    mutated_frames().map(json.dumps),
)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)


# ------------------------------------------------------------------------- the model


def _unreadable(text: str) -> bool:
    """Not strict JSON: bad syntax, NaN/Infinity, a lone surrogate, nesting past MAX_DEPTH."""

    def refuse(name: str) -> Any:
        raise ValueError(name)

    try:
        value = json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        return True
    return not _sound(value)


def _sound(value: Any, depth: int = 1) -> bool:
    if isinstance(value, str):
        return not any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list | dict):
        if depth > MAX_DEPTH:
            return False
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        return all(_sound(item, depth + 1) for item in items)
    return True


def _token_form(frame: dict[str, Any]) -> CloseCode | None:
    token = frame.get("token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return CloseCode.BAD_TOKEN  # missing, or not a string a token could be
    return None


def _token_code(frame: dict[str, Any]) -> CloseCode | None:
    if _token_form(frame) is None and frame["token"] == VALID_TOKEN:
        return None
    return CloseCode.BAD_TOKEN  # malformed, or not a token this hub signed


def _since_code(since: object) -> CloseCode | None:
    if since is None:
        return None
    if not isinstance(since, dict) or len(since) > MAX_SINCE_TOPICS:
        return CloseCode.PROTOCOL_ERROR
    for topic, offset in since.items():
        match = OFFSET.fullmatch(offset) if isinstance(offset, str) else None
        if not TOPIC.fullmatch(topic) or match is None or max(int(match[1]), int(match[2])) >= 2**64:
            return CloseCode.PROTOCOL_ERROR
    if not set(since) <= GRANTED:
        return CloseCode.FORBIDDEN  # §8: a since naming a topic the token does not grant
    return None


def expected_close(data: str | bytes, *, opened: bool) -> CloseCode | None:
    """The close code docs/protocol.md names for ``data`` sent on ``hub.v1.json`` as the first
    frame (``opened`` False) or on an open connection (True); None: the frame is fine."""
    if len(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")) > MAX_FRAME:
        return CloseCode.FRAME_TOO_BIG
    if isinstance(data, bytes) or _unreadable(data):
        return CloseCode.PROTOCOL_ERROR  # a binary frame on hub.v1.json, or not (strict) JSON
    frame = json.loads(data)
    return expected_frame_close(frame, opened=opened) if isinstance(frame, dict) else CloseCode.PROTOCOL_ERROR


def expected_frame_close(frame: dict[str, Any], *, opened: bool) -> CloseCode | None:
    """``expected_close`` for a frame map that was readable."""
    kind = frame.get("type")
    if kind not in ("connect", "refresh", "pong"):
        return CloseCode.PROTOCOL_ERROR
    if kind == "pong":
        return None if opened else CloseCode.BAD_TOKEN  # no connect first: no token
    if kind == "refresh":
        return _token_code(frame) if opened else CloseCode.BAD_TOKEN  # first: no connect, no token
    form = _token_form(frame)
    if form is not None:
        return form
    since = _since_code(frame.get("since"))
    if opened:  # §8: a second connect is a protocol error (its token is never looked at)
        return CloseCode.PROTOCOL_ERROR if since in (None, CloseCode.FORBIDDEN) else since
    if since == CloseCode.PROTOCOL_ERROR:
        return since
    return _token_code(frame) or since


# ------------------------------------------------------------------------- the tests


async def assert_serves(hub: RunningHub, witness: Client, expected: int) -> None:
    await hub.publish("witness", expected)
    [frame] = await witness.notifications(1)
    assert frame["data"] == expected


async def assert_outcome(client: Client, expected: CloseCode | None, sent: object) -> None:
    """The socket is accepted (``expected`` None) or closed with exactly ``expected``, after an
    ``error`` frame with the same code (1009 is the WebSocket layer's own: no error frame)."""
    if expected is None:
        frame = await client.recv()
        assert frame["type"] == "connected", (sent, frame)
        return
    closed = await client.closed()
    assert closed.code == expected, f"expected close {int(expected)} for {sent!r:.300}, got {closed}"
    if expected != CloseCode.FRAME_TOO_BIG:
        assert closed.error is not None, f"expected an error frame before the close for {sent!r:.300}"
        assert closed.error["code"] == int(expected), closed.error


def _connect(**fields: Any) -> str:
    return json.dumps({"type": "connect", "token": VALID_TOKEN, **fields})


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@FUZZ
@given(first=first_frames)
@example(first="[" * 60_000)  # unreadable and deep: once a RecursionError → 1011
@example(first="[" * 1_000 + "]" * 1_000)  # readable, too deep
@example(first=_connect(extra=_nested(MAX_DEPTH + 8)))  # a valid connect with a too-deep field
@example(first='{"type": "connect", "token": "\\ud800"}')  # a lone surrogate: not UTF-8 text
@example(first='{"type": "pong", "x": Infinity}')  # not JSON (JSON.parse throws on it)
@example(first=_connect(since={"user.fuzz": "\u0661-\u0660"}))  # Unicode digits are not ASCII digits
@example(first=_connect(since={"user.fuzz": f"{2**64}-0"}))  # past an unsigned 64-bit part
@example(first=_connect(since={"user.other": "1-0"}))  # a topic the token does not grant
@example(first=" " * (MAX_FRAME + 1))  # too big
async def test_fuzzed_first_frame(hub: RunningHub, first: str | bytes) -> None:
    witness = await hub.connect("witness")
    client = Client(await hub.open("hub.v1.json"), binary=False)
    try:
        await client.ws.send(first)
        await assert_outcome(client, expected_close(first, opened=False), first)
        await assert_serves(hub, witness, len(first))
    finally:
        await client.close()
        await witness.close()


@FUZZ
@given(frames=st.lists(mutated_frames(), min_size=1, max_size=3), binary=st.booleans())
async def test_fuzzed_frames_after_connect(hub: RunningHub, frames: list[dict[str, Any]], binary: bool) -> None:
    witness = await hub.connect("witness")
    client = await hub.connect("fuzz", msgpack_protocol=binary)
    # The first frame with a fault decides; the final subscribe is never valid, so every session ends.
    outcomes = [expected_frame_close(frame, opened=True) for frame in [*frames, {"type": "subscribe"}]]
    expected = next(code for code in outcomes if code is not None)
    try:
        for frame in frames:
            await client.ws.send(msgpack.packb(frame) if binary else json.dumps(frame))
        await client.send({"type": "subscribe"})
        await assert_outcome(client, expected, frames)
        await assert_serves(hub, witness, len(frames))
    finally:
        await client.close()
        await witness.close()
