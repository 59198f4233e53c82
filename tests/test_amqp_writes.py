"""The coalescing AMQP writer (hub/backends/amqp_writes.py), over a real TCP connection.

What one loop turn writes reaches the peer together, in order, at the end of that turn;
``drain`` and ``close`` send what is kept at once, so nothing aiormq waits on is held back.
A real connection through it is covered by every distributed test (the backend installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aio_pika
import pytest

from hub.backends import amqp_writes
from hub.backends.amqp_writes import CoalescingWriter
from testkit.services import amqp_url, process_vhost


@pytest.fixture
async def pair() -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """(what the server side reads, the client's writer) over loopback TCP."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    peer, peer_writer = await asyncio.wait_for(accepted.get(), 5)
    yield peer, writer
    for end in (writer, peer_writer):
        end.close()
        with contextlib.suppress(OSError):
            await end.wait_closed()
    server.close()
    await server.wait_closed()


async def test_writes_of_one_turn_are_sent_together_in_order_after_it(
    pair: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    peer, inner = pair
    writer = CoalescingWriter(inner)
    sent: list[bytes] = []
    original = inner.transport.write

    def record(data: bytes) -> None:  # the real transport's write, observed
        sent.append(bytes(data))
        original(data)

    inner.transport.write = record  # type: ignore[method-assign]
    for chunk in (b"one ", b"two ", b"three"):
        writer.write(chunk)
    assert sent == []  # kept until the turn ends
    assert await asyncio.wait_for(peer.readexactly(13), 5) == b"one two three"
    assert sent == [b"one two three"]


async def test_drain_and_close_send_what_is_kept_at_once(
    pair: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    peer, inner = pair
    writer = CoalescingWriter(inner)
    writer.write(b"before drain")
    await writer.drain()
    assert inner.transport.get_write_buffer_size() == 0 or await peer.readexactly(12) == b"before drain"
    writer.write(b"|last")
    writer.close()  # the close frame of aiormq goes out before the socket closes
    rest = await asyncio.wait_for(peer.read(), 5)
    assert rest.endswith(b"|last")


async def test_a_connection_through_it_publishes_consumes_and_acks() -> None:
    connection = aio_pika.Connection(aio_pika.connection.make_url(amqp_url(process_vhost())))
    amqp_writes.install(connection)
    await connection.connect(timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(exclusive=True)
        bodies = [str(i).encode() for i in range(200)]
        await asyncio.gather(*(channel.default_exchange.publish(aio_pika.Message(b), queue.name) for b in bodies))
        got: list[bytes] = []
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                got.append(message.body)
                if len(got) == len(bodies):
                    break
        assert got == bodies
