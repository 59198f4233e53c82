"""``hub``: serve, publish, token, presence, config."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

import httpx

from hub.listen import register as register_listen
from hub.settings import ConfigError, Settings, config_table
from hub.topics import InvalidTopic, user_topic, validate_topic


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hub`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ConfigError as exc:
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return 2
    except InvalidTopic as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"hub: the hub did not answer ({exc!r}); is it running? (HUB_URL / --url)", file=sys.stderr)
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Real-time notification hub.")
    commands = parser.add_subparsers(required=True, metavar="command")

    serve = commands.add_parser("serve", help="run a hub replica (embedded backend unless HUB_AMQP_URL/HUB_REDIS_URL)")
    serve.add_argument("--host", help="interface (HUB_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (HUB_PORT, default 8080)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="HUB_LOG_LEVEL")
    serve.add_argument("--replica-id", help="HUB_REPLICA_ID")
    serve.add_argument("--history-size", type=int, help="HUB_HISTORY_SIZE (0: history off)")
    serve.add_argument(
        "--workers", type=int, default=1, help="replica processes sharing the port (distributed backend only)"
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for each worker
    serve.set_defaults(run=_serve)

    publish = commands.add_parser("publish", help="publish one notification")
    target = publish.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="the user id (topic user.<id>)")
    target.add_argument("--topic", help="a topic, e.g. broadcast")
    publish.add_argument("data", help="the payload, JSON (a bare word is sent as a string)")
    publish.add_argument("--id", help="message id (de-duplication key)")
    publish.add_argument(
        "--url", default=None, help="hub URL for HTTP publishing (HUB_URL, default http://127.0.0.1:8080)"
    )
    publish.set_defaults(run=_publish)

    token = commands.add_parser("token", help="mint a development token with HUB_JWT_SECRET")
    token.add_argument("--user", required=True)
    token.add_argument("--ttl", type=float, default=3600, help="seconds until it expires (default 3600)")
    token.add_argument("--topic", action="append", default=[], help="grant an extra topic (repeatable)")
    token.set_defaults(run=_token)

    presence = commands.add_parser("presence", help="is a user online, and on how many sockets")
    presence.add_argument("users", nargs="+")
    presence.add_argument("--url", default=None, help="hub URL (HUB_URL, default http://127.0.0.1:8080)")
    presence.set_defaults(run=_presence)

    register_listen(commands)  # hub listen --user 42 (hub/listen.py)

    config = commands.add_parser("config", help="print the configuration table (markdown)")
    config.set_defaults(run=lambda args: print(config_table()) or 0)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from hub.node import Node
    from hub.server import serve

    settings = Settings.from_env(
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        replica_id=args.replica_id,
        history_size=args.history_size,
    )
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1:
        from hub.workers import run_workers

        forwarded = [
            f"--{name.replace('_', '-')}={value}"
            for name, value in vars(args).items()
            if name in ("host", "port", "log_level", "history_size") and value is not None
        ]
        return run_workers(settings, args.workers, forwarded)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(Node(settings), reuse_port=args.reuse_port))
    return 0


def _payload(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _hub_url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("HUB_URL") or "http://127.0.0.1:8080").rstrip("/")


def _publish(args: argparse.Namespace) -> int:
    topic = user_topic(args.user) if args.user else validate_topic(args.topic)  # refuse before connecting
    amqp_url = os.environ.get("HUB_AMQP_URL")
    if amqp_url and not args.url:  # the AMQP path (DESIGN.md §4): confirmed, like any backend service
        from aiormq.exceptions import AMQPError

        from hub.publisher import BlockingPublisher

        try:
            exchange = os.environ.get("HUB_EXCHANGE") or "notifications"
            with BlockingPublisher(amqp_url, exchange=exchange) as publisher:
                id = publisher.publish_topic(topic, _payload(args.data), message_id=args.id)
        except (AMQPError, ConnectionError) as exc:
            print(f"hub: RabbitMQ did not take the notification ({exc!r}); nothing was published", file=sys.stderr)
            return 1
        print(json.dumps({"id": id, "offset": None}))
        return 0
    settings = Settings.from_env()
    body: dict[str, Any] = {"data": _payload(args.data)}
    body["user" if args.user else "topic"] = args.user or args.topic
    if args.id:
        body["id"] = args.id
    response = httpx.post(
        _hub_url(args) + "/api/publish", json=body, headers={"Authorization": f"Bearer {settings.api_key}"}
    )
    print(response.text)
    return 0 if response.is_success else 1


def _token(args: argparse.Namespace) -> int:
    from hub.auth import Authenticator

    settings = Settings.from_env()
    print(Authenticator(settings).mint(args.user, ttl=args.ttl, topics=args.topic))
    return 0


def _presence(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    response = httpx.get(
        _hub_url(args) + "/api/presence",
        params={"user": ",".join(args.users)},
        headers={"Authorization": f"Bearer {settings.api_key}"},
    )
    print(response.text)
    return 0 if response.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
