"""``hub``: serve, publish, token, presence, config.

Every command reads its configuration through ``Settings.from_env``; the client
commands (publish, token, presence) with ``serving=False``, so they need only the
variables they use. Exit statuses: 0 done, 1 the hub or a service refused or did not
answer, 2 bad configuration or arguments, 3 ``hub serve`` could not start.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from hub.listen import register as register_listen
from hub.payload import BadPayload, dumps_json, loads_json
from hub.settings import ConfigError, Settings, config_table, effective_table
from hub.topics import InvalidTopic, user_topic, validate_topic

EXIT_REFUSED = 1
EXIT_CONFIG = 2
EXIT_CANNOT_START = 3


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hub`` console script; returns the exit status."""
    from hub.auth import TokenError
    from hub.startup import StartupError

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ConfigError as exc:
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (InvalidTopic, TokenError, ValueError) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:
        print(f"hub: cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except httpx.HTTPError as exc:
        print(f"hub: the hub did not answer ({exc!r}); is it running? (HUB_URL / --url)", file=sys.stderr)
        return EXIT_REFUSED
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

    publish = commands.add_parser(
        "publish", help="publish one notification (AMQP with HUB_AMQP_URL, else HTTP); prints {id, topic, offset}"
    )
    target = publish.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="the user id (topic user.<id>)")
    target.add_argument("--topic", help="a topic, e.g. broadcast")
    publish.add_argument("data", help="the payload, JSON (a bare word is sent as a string)")
    publish.add_argument("--id", help="message id (de-duplication key)")
    publish.add_argument(
        "--priority", type=int, choices=range(10), metavar="0-9", help="AMQP priority: 9 overtakes a backlog first"
    )
    publish.add_argument("--url", default=None, help="publish over HTTP to this hub (default: HUB_URL)")
    publish.set_defaults(run=_publish)

    token = commands.add_parser("token", help="mint a development token with HUB_JWT_SECRET")
    token.add_argument("--user", required=True)
    token.add_argument("--ttl", type=float, default=3600, help="seconds until it expires (default 3600)")
    token.add_argument("--topic", action="append", default=[], help="grant an extra topic (repeatable)")
    token.set_defaults(run=_token)

    presence = commands.add_parser(
        "presence", help="is a user online, and on how many sockets (Redis with HUB_REDIS_URL, else HTTP)"
    )
    presence.add_argument("users", nargs="+")
    presence.add_argument("--url", default=None, help="ask this hub over HTTP (default: HUB_URL)")
    presence.set_defaults(run=_presence)

    register_listen(commands)  # hub listen --user 42 (hub/listen.py)

    config = commands.add_parser("config", help="print the configuration table (markdown)")
    config.add_argument(
        "--effective",
        action="store_true",
        help="the values `hub serve` would use here (environment included, secrets masked)",
    )
    config.set_defaults(run=_config)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from hub import logs
    from hub.node import Node
    from hub.server import run

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
    logs.configure(settings.log_format, settings.log_level, settings.replica_id)
    run(Node(settings), reuse_port=args.reuse_port)
    return 0


def _config(args: argparse.Namespace) -> int:
    print(effective_table(Settings.from_env()) if args.effective else config_table())
    return 0


def _payload(text: str) -> Any:
    """The JSON value ``text`` holds (checked like any payload), or ``text`` itself when it is
    not JSON at all (a bare word). JSON the hub would refuse (NaN, too deep) is an error."""
    try:
        return loads_json(text)
    except BadPayload:
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            return text
        raise


def _api_key(settings: Settings, command: str) -> str:
    if not settings.api_key:
        raise ConfigError(f"`hub {command}` over HTTP needs HUB_API_KEY")
    return settings.api_key


def _publish(args: argparse.Namespace) -> int:
    topic = user_topic(args.user) if args.user else validate_topic(args.topic)  # refuse before connecting
    settings = Settings.from_env(serving=False)
    data = _payload(args.data)
    if settings.amqp_url and not args.url:  # the AMQP path (docs/protocol.md §4): confirmed, like any backend service
        from aiormq.exceptions import AMQPError

        from hubnotify import BlockingPublisher

        try:
            with BlockingPublisher.from_settings(settings) as publisher:
                id = publisher.publish_topic(topic, data, message_id=args.id, priority=args.priority)
        except (AMQPError, ConnectionError, TimeoutError) as exc:
            print(f"hub: RabbitMQ did not take the notification ({exc!r}); nothing was published", file=sys.stderr)
            return EXIT_REFUSED
        # Sequencing happens after the hand-over: no offset yet (docs/protocol.md §8).
        print(dumps_json({"id": id, "topic": topic, "offset": None}))
        return 0
    body: dict[str, Any] = {"topic": topic, "data": data}
    if args.id:
        body["id"] = args.id
    if args.priority is not None:
        body["priority"] = args.priority
    response = httpx.post(
        (args.url or settings.client_url).rstrip("/") + "/api/publish",
        json=body,
        headers={"Authorization": f"Bearer {_api_key(settings, 'publish')}"},
    )
    if not response.is_success:
        return _refused(response)
    answer = response.json()
    shown = {"id": answer["id"], "topic": answer["topic"], "offset": answer["offset"]}
    if answer.get("duplicate"):
        shown["duplicate"] = True
    print(dumps_json(shown))
    return 0


def _token(args: argparse.Namespace) -> int:
    from hub.auth import Authenticator

    settings = Settings.from_env(serving=False)
    print(Authenticator(settings).mint(args.user, ttl=args.ttl, topics=args.topic))
    return 0


def _presence(args: argparse.Namespace) -> int:
    settings = Settings.from_env(serving=False)
    users = [user for part in args.users for user in part.split(",") if user]
    if settings.redis_url and not args.url:  # straight from Redis, the same truth as the API (docs/protocol.md §6)
        from redis.exceptions import RedisError

        from hub.tls import redis_ssl_options
        from hubnotify.presence import connections_many

        try:
            counts = connections_many(
                users,
                url=settings.redis_url,
                prefix=settings.redis_prefix,
                timeout=settings.backend_timeout,
                tls=redis_ssl_options(settings),
            )
        except RedisError as exc:
            print(f"hub: Redis did not answer ({type(exc).__name__}: {exc})", file=sys.stderr)
            return EXIT_REFUSED
        print(dumps_json({"users": {u: {"online": c > 0, "connections": c} for u, c in counts.items()}}))
        return 0
    response = httpx.get(
        (args.url or settings.client_url).rstrip("/") + "/api/presence",
        params={"user": ",".join(users)},
        headers={"Authorization": f"Bearer {_api_key(settings, 'presence')}"},
    )
    if not response.is_success:
        return _refused(response)
    print(dumps_json(response.json()))
    return 0


def _refused(response: httpx.Response) -> int:
    try:
        reason = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        reason = response.text[:200]
    print(f"hub: the hub answered {response.status_code}: {reason}", file=sys.stderr)
    return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
