"""Client side of every target: how to open a subscribed socket and read payloads.

Each adapter is a small ``ClientKind``: ``open`` returns a WebSocket on which the
subscription is already confirmed by the server (so a publish after ``open``
returns must be delivered), and ``decode`` turns one incoming frame into the
published payload (a dict with ``r`` run, ``p`` publisher, ``s`` seq, ``t`` send
time in ns) or ``None`` for control frames, answering pings itself when needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect

from testkit.tokens import make_token

Payload = dict[str, Any]


@dataclass(frozen=True)
class ClientSpec:
    """Picklable description of how receivers reach a target."""

    kind: str  # "hub" | "relay" | "sio" | "stomp"
    url: str
    jwt_secret: str = ""
    vhost: str = "/"
    exchange: str = "notifications"


class ClientKind(Protocol):
    """One target's client protocol."""

    async def open(self, spec: ClientSpec, user: str) -> ClientConnection:
        """Connect and subscribe ``user``; raise on refusal or timeout."""
        ...

    async def decode(self, ws: ClientConnection, frame: str | bytes) -> Payload | None:
        """Return the payload carried by ``frame``, or None for a control frame."""
        ...


async def _ws(url: str) -> ClientConnection:
    return await connect(
        url,
        ping_interval=None,
        compression=None,
        open_timeout=30,
        max_size=2**20,
        max_queue=None,
        close_timeout=1,
    )


def _text(frame: str | bytes) -> str:
    return frame if isinstance(frame, str) else frame.decode()


class HubClient:
    """Hub protocol v1 (DESIGN §3), JSON subprotocol: token in the first frame."""

    async def open(self, spec: ClientSpec, user: str) -> ClientConnection:
        token = make_token(user, ttl=3600, secret=spec.jwt_secret)
        ws = await _ws(spec.url)
        await ws.send(json.dumps({"type": "connect", "token": token}))
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "connected":
                return ws
            if frame.get("type") == "error":
                raise ConnectionError(f"hub refused connect: {frame}")

    async def decode(self, ws: ClientConnection, frame: str | bytes) -> Payload | None:
        msg = json.loads(frame)
        kind = msg.get("type")
        if kind == "notification":
            data: Payload = msg["data"]
            return data
        if kind == "ping":
            await ws.send('{"type":"pong"}')
        return None


class RelayClient:
    """The reference relay: ``{"user": id}`` then raw bodies."""

    async def open(self, spec: ClientSpec, user: str) -> ClientConnection:
        ws = await _ws(spec.url)
        await ws.send(json.dumps({"user": user}))
        frame = json.loads(await ws.recv())
        if frame.get("type") != "connected":
            raise ConnectionError(f"relay: expected connected, got {frame}")
        return ws

    async def decode(self, ws: ClientConnection, frame: str | bytes) -> Payload | None:
        payload: Payload = json.loads(frame)
        return payload


class SocketIOClient:
    """Engine.IO v4 / Socket.IO v5 over a bare WebSocket (no polling upgrade)."""

    async def open(self, spec: ClientSpec, user: str) -> ClientConnection:
        ws = await _ws(spec.url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket")
        opening = _text(await ws.recv())
        if not opening.startswith("0"):
            raise ConnectionError(f"engine.io: expected open packet, got {opening[:80]!r}")
        await ws.send("40" + json.dumps({"user": user}))
        while True:
            packet = _text(await ws.recv())
            if packet.startswith("40"):
                return ws
            if packet.startswith("44"):
                raise ConnectionError(f"socket.io refused connect: {packet[:80]!r}")
            if packet == "2":
                await ws.send("3")

    async def decode(self, ws: ClientConnection, frame: str | bytes) -> Payload | None:
        packet = _text(frame)
        if packet.startswith("42"):
            event = json.loads(packet[2:])
            payload: Payload = event[1]
            return payload
        if packet == "2":
            await ws.send("3")
        return None


def stomp_frame(command: str, headers: dict[str, str], body: str = "") -> str:
    """Encode one STOMP 1.2 frame (header values must not contain ':' or newlines)."""
    lines = [command, *(f"{k}:{v}" for k, v in headers.items())]
    return "\n".join(lines) + "\n\n" + body + "\0"


def stomp_parse(data: str) -> list[tuple[str, dict[str, str], str]]:
    """Decode the STOMP frames in one WebSocket message: (command, headers, body)."""
    frames = []
    for raw in data.split("\0"):
        raw = raw.lstrip("\r\n")
        if not raw:
            continue
        head, _, body = raw.partition("\n\n")
        command, *lines = head.split("\n")
        headers: dict[str, str] = {}
        for line in lines:
            key, _, value = line.partition(":")
            headers.setdefault(key, value)
        frames.append((command, headers, body))
    return frames


class StompClient:
    """RabbitMQ Web-STOMP: CONNECT, SUBSCRIBE /exchange/<x>/user.<id> with a receipt."""

    async def open(self, spec: ClientSpec, user: str) -> ClientConnection:
        ws = await _ws(spec.url)
        await ws.send(
            stomp_frame(
                "CONNECT",
                {
                    "accept-version": "1.2",
                    "host": spec.vhost,
                    "login": "guest",
                    "passcode": "guest",
                    "heart-beat": "0,0",
                },
            )
        )
        await self._expect(ws, "CONNECTED")
        destination = f"/exchange/{spec.exchange}/user.{user}"
        await ws.send(stomp_frame("SUBSCRIBE", {"id": "0", "destination": destination, "receipt": "s0"}))
        await self._expect(ws, "RECEIPT")
        return ws

    @staticmethod
    async def _expect(ws: ClientConnection, command: str) -> None:
        for got, headers, body in stomp_parse(_text(await ws.recv())):
            if got == command:
                return
            raise ConnectionError(f"stomp: expected {command}, got {got} {headers} {body[:80]}")
        raise ConnectionError(f"stomp: expected {command}, got an empty message")

    async def decode(self, ws: ClientConnection, frame: str | bytes) -> Payload | None:
        for command, _headers, body in stomp_parse(_text(frame)):
            if command == "MESSAGE":
                payload: Payload = json.loads(body)
                return payload
        return None


KINDS: dict[str, ClientKind] = {
    "hub": HubClient(),
    "relay": RelayClient(),
    "sio": SocketIOClient(),
    "stomp": StompClient(),
}
