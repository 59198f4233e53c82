"""``hub listen``: connect to a hub as one user and print each notification as a JSON line.

A socket must send its ``connect`` frame within ``HUB_AUTH_TIMEOUT`` (docs/protocol.md §3),
too soon for pasting a token into an interactive WebSocket client, so the README's tour
uses this command: it mints a token with the configured secret (the embedded hub's
development secret when ``HUB_JWT_SECRET`` is unset), or takes one with ``--token``,
sends ``connect`` at once, answers pings, and writes every ``notification`` frame to
stdout as one compact JSON line, until Ctrl-C or until the hub closes the socket. Status
(``connected``, ``error`` frames, the close) goes to stderr, so stdout can be piped.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from hub.payload import BadPayload, dumps_json, loads_json
from hub.settings import Settings

SUBPROTOCOL = Subprotocol("hub.v1.json")
OPEN_TIMEOUT = 10.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``listen`` subcommand to the ``hub`` parser's subparsers."""
    listen = commands.add_parser("listen", help="connect as a user and print notifications as JSON lines")
    who = listen.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="mint a token for this user id with HUB_JWT_SECRET (dev default when unset)")
    who.add_argument("--token", help="connect with this JWT instead of minting one")
    listen.add_argument("--topic", action="append", default=[], help="grant an extra topic in the minted token")
    listen.add_argument("--ttl", type=float, default=3600, help="seconds the minted token lives (default 3600)")
    listen.add_argument(
        "--url", default=None, help="the hub's WebSocket URL (default: HUB_URL with /ws, or ws://127.0.0.1:8080/ws)"
    )
    listen.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``hub listen``; the exit status is 0 after Ctrl-C or SIGTERM, 1 when the socket could not stay open."""
    settings = Settings.from_env(serving=False)
    token = args.token or _mint(settings, args.user, args.topic, args.ttl)
    if token is None:
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # a process manager's stop is a Ctrl-C too
    try:
        return asyncio.run(listen(ws_url(args.url or settings.client_url), token))
    except KeyboardInterrupt:
        return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def ws_url(url: str) -> str:
    """The WebSocket URL for ``url`` (``--url``, or ``HUB_URL``): http(s)://… becomes ws(s)://…/ws."""
    base = url.rstrip("/")
    if base.startswith(("http://", "https://")):
        base = "ws" + base[4:]
    return base if base.endswith("/ws") else base + "/ws"


def _mint(settings: Settings, user: str, topics: list[str], ttl: float) -> str | None:
    from hub.auth import Authenticator, TokenError

    try:
        return Authenticator(settings).mint(user, ttl=ttl, topics=topics)
    except TokenError as exc:
        print(f"hub listen: cannot mint a token ({exc}); pass one with --token", file=sys.stderr)
        return None


async def listen(url: str, token: str) -> int:
    """Connect, send ``connect``, print notifications until cancelled; 1 if the hub ends the socket."""
    try:
        ws = await connect(url, subprotocols=[SUBPROTOCOL], open_timeout=OPEN_TIMEOUT, max_size=2**22)
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        print(f"hub listen: cannot open {url}: {exc}", file=sys.stderr)
        return 1
    async with ws:
        await ws.send(dumps_json({"type": "connect", "token": token}))
        try:
            while True:
                await _handle(ws, await ws.recv())
        except ConnectionClosed as closed:
            code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "no close frame")
            print(f"hub listen: the hub closed the socket: {code} {reason}".rstrip(), file=sys.stderr)
            return 1


async def _handle(ws: ClientConnection, raw: str | bytes) -> None:
    try:
        frame = loads_json(raw)
    except BadPayload as exc:
        print(f"hub listen: unreadable frame ignored: {exc}", file=sys.stderr)
        return
    kind = frame.get("type") if isinstance(frame, dict) else None
    if kind == "notification":
        print(dumps_json(frame), flush=True)  # one line: the compact encoder escapes newlines
    elif kind == "ping":
        await ws.send(dumps_json({"type": "pong"}))
    elif kind == "connected":
        topics = ", ".join(frame.get("topics") or [])
        print(
            f"hub listen: connected as user {frame.get('user')} to {frame.get('replica')} (topics: {topics});"
            " Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"hub listen: {dumps_json(frame)}", file=sys.stderr, flush=True)
