"""Random and mutated frames against live sessions: the right close code, and the hub serves on."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.codes import CloseCode
from tests.harness import Client, RunningHub, make_token

#: Codes a misbehaving client may get: never an internal error, never a silent hang.
CLIENT_FAULT_CODES = {
    CloseCode.BAD_TOKEN,
    CloseCode.PROTOCOL_ERROR,
    CloseCode.FORBIDDEN,
    CloseCode.LIMIT,
    CloseCode.TOKEN_EXPIRED,
    CloseCode.FRAME_TOO_BIG,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

valid_connect = {"type": "connect", "token": make_token("fuzz", ttl=3600), "since": {"user.fuzz": "1-0"}}


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame with one field replaced, removed or added."""
    frame: dict[str, Any] = dict(
        draw(st.sampled_from([valid_connect, {"type": "refresh", "token": valid_connect["token"]}, {"type": "pong"}]))
    )
    key = draw(st.sampled_from(["type", "token", "since", "extra"]))
    action = draw(st.sampled_from(["replace", "remove"]))
    if action == "remove":
        frame.pop(key, None)
    else:
        frame[key] = draw(json_values)
    return frame


first_frames = st.one_of(
    st.binary(max_size=200).map(lambda b: ("bytes", b)),
    st.text(max_size=200).map(lambda t: ("text", t)),
    json_values.map(lambda v: ("text", json.dumps(v))),
    mutated_frames().map(lambda f: ("text", json.dumps(f))),
)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)


async def assert_serves(hub: RunningHub, witness: Client, expected: int) -> None:
    await hub.publish("witness", expected)
    [frame] = await witness.notifications(1)
    assert frame["data"] == expected


@FUZZ
@given(first=first_frames)
async def test_fuzzed_first_frame(hub: RunningHub, first: tuple[str, str | bytes]) -> None:
    witness = await hub.connect("witness")
    client = Client(await hub.open("hub.v1.json"), binary=False)
    try:
        _kind, data = first
        await client.ws.send(data)
        frame = await client.recv()
        if frame["type"] != "connected":  # a mutation can still be a valid connect
            assert frame["type"] == "error", frame
            closed = await client.closed()
            assert closed.code in CLIENT_FAULT_CODES, (first, closed)
        await assert_serves(hub, witness, len(data))
    finally:
        await client.close()
        await witness.close()


@FUZZ
@given(frames=st.lists(mutated_frames(), min_size=1, max_size=3), binary=st.booleans())
async def test_fuzzed_frames_after_connect(hub: RunningHub, frames: list[dict[str, Any]], binary: bool) -> None:
    witness = await hub.connect("witness")
    client = await hub.connect("fuzz", msgpack_protocol=binary)
    try:
        for frame in frames:
            await client.ws.send(msgpack.packb(frame) if binary else json.dumps(frame))
        await client.send({"type": "subscribe"})  # always invalid: the session must end with a client-fault code
        closed = await client.closed()
        assert closed.code in CLIENT_FAULT_CODES, (frames, closed)
        assert closed.error is not None, "expected an error frame before the close"
        await assert_serves(hub, witness, len(frames))
    finally:
        await client.close()
        await witness.close()
