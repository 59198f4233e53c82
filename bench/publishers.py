"""Publisher side of every target: put one payload on its way to one user.

A ``Sender`` is opened once per publisher process and reused for every step.
``send`` may return before the target has the message (AMQP without confirms)
or after (HTTP, Socket.IO with confirms); the caller paces and bounds
concurrency, and stamps the send time in the payload just before the call.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aio_pika


@dataclass(frozen=True)
class PublishSpec:
    """Picklable description of how publishers reach a target."""

    kind: str  # "amqp" | "http" | "sio"
    url: str  # amqp://… or http://…
    exchange: str = "notifications"
    api_key: str = ""


class Sender(Protocol):
    """An open publishing connection."""

    async def send(self, user: str, payload: dict[str, Any]) -> None:
        """Publish ``payload`` for ``user``; raise on failure."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class AmqpSender:
    """Plain AMQP publish to a topic exchange, key ``user.<id>``, JSON body.

    Transient messages, no publisher confirms: the cheapest publish, identical
    for every AMQP-fed target so the broker's share of the work is comparable.
    """

    def __init__(self, connection: aio_pika.abc.AbstractConnection, exchange: Any) -> None:
        self._connection = connection
        self._exchange = exchange

    @classmethod
    async def open(cls, spec: PublishSpec) -> AmqpSender:
        connection = await aio_pika.connect(spec.url)
        channel = await connection.channel(publisher_confirms=False)
        exchange = await channel.declare_exchange(spec.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        return cls(connection, exchange)

    async def send(self, user: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        message = aio_pika.Message(body, content_type="application/json")
        await self._exchange.publish(message, routing_key=f"user.{user}")

    async def close(self) -> None:
        await self._connection.close()


class HttpSender:
    """``POST /api/publish`` over a pool of keep-alive HTTP/1.1 connections.

    A hand-written client: httpx costs more CPU per request than the hub spends
    serving it, which would make the generator the bottleneck.
    """

    def __init__(self, spec: PublishSpec, pool: int = 32) -> None:
        parts = urlsplit(spec.url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._key = spec.api_key
        self._free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._pool = pool

    @classmethod
    async def open(cls, spec: PublishSpec) -> HttpSender:
        sender = cls(spec)
        for _ in range(sender._pool):
            sender._free.put_nowait(await asyncio.open_connection(sender._host, sender._port))
        return sender

    async def send(self, user: str, payload: dict[str, Any]) -> None:
        try:
            await self._post(user, payload)
        except (ConnectionError, EOFError):
            # The server closed an idle keep-alive connection (uvicorn: after 5 s);
            # the request never reached it, so sending it again can't duplicate it.
            await self._post(user, payload)

    async def _post(self, user: str, payload: dict[str, Any]) -> None:
        body = json.dumps({"user": user, "data": payload}).encode()
        head = (
            f"POST /api/publish HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Authorization: Bearer {self._key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        reader, writer = await self._free.get()
        try:
            writer.write(head + body)
            status = await reader.readline()
            if not status:
                raise ConnectionResetError("publish: connection closed before the response")
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
        except BaseException:
            writer.close()
            try:
                reader, writer = await asyncio.open_connection(self._host, self._port)
            finally:
                self._free.put_nowait((reader, writer))
            raise
        self._free.put_nowait((reader, writer))
        if not status.startswith(b"HTTP/1.1 2"):
            raise RuntimeError(f"publish: expected 2xx, got {status!r}")

    async def close(self) -> None:
        while not self._free.empty():
            _, writer = self._free.get_nowait()
            writer.close()


class SocketIOSender:
    """A write-only ``socketio.AsyncAioPikaManager``: ``emit("n", payload, room=user)``."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    @classmethod
    async def open(cls, spec: PublishSpec) -> SocketIOSender:
        import socketio

        manager = socketio.AsyncAioPikaManager(spec.url, write_only=True)
        # Its lazy connect publishes through a half-initialised exchange when the first
        # emits are concurrent ("Cannot publish to rabbitmq... giving up", message
        # dropped without an error): connect once, alone, before the load starts.
        await manager.emit("warmup", {}, room="bench-warmup", namespace="/")
        return cls(manager)

    async def send(self, user: str, payload: dict[str, Any]) -> None:
        await self._manager.emit("n", payload, room=user, namespace="/")

    async def close(self) -> None:
        connection = getattr(self._manager, "publisher_connection", None)
        if connection is not None:
            await connection.close()


async def open_sender(spec: PublishSpec) -> Sender:
    """Open the sender for ``spec.kind``."""
    if spec.kind == "amqp":
        return await AmqpSender.open(spec)
    if spec.kind == "http":
        return await HttpSender.open(spec)
    if spec.kind == "sio":
        return await SocketIOSender.open(spec)
    raise ValueError(f"publish kind: expected amqp, http or sio, got {spec.kind!r}")
