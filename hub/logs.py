"""Logging for ``hub serve``: plain lines for a terminal, or one JSON object per line.

``HUB_LOG_FORMAT=json`` makes every line — the hub's, uvicorn's, the libraries' — one
JSON object with ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger`` and
``message``, plus ``replica`` always and ``conn_id`` / ``user`` when the line was logged
on behalf of a socket (``exc`` holds a traceback when there is one). The socket fields
come from context variables: a session sets them once (``bind_connection``) in its own
task, so every line logged from that task or the tasks it starts carries them, with no
logger adapters threaded through the code.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from contextvars import ContextVar
from typing import Any, Final

#: The socket a line is logged for (set by the session, per task).
CONN_ID: ContextVar[str | None] = ContextVar("hub_conn_id", default=None)
USER: ContextVar[str | None] = ContextVar("hub_user", default=None)

FORMATS: Final = ("plain", "json")
PLAIN_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind_connection(conn_id: str, user: str | None = None) -> None:
    """Tag every line logged from now on in this task (and tasks it starts) with the socket."""
    CONN_ID.set(conn_id)
    if user is not None:
        USER.set(user)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for the fields."""

    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "replica": self.replica,
        }
        conn_id, user = CONN_ID.get(), USER.get()
        if conn_id is not None:
            entry["conn_id"] = conn_id
        if user is not None:
            entry["user"] = user
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        # Never raises: a message is a str, and anything odd in it is escaped.
        return json.dumps(entry, ensure_ascii=False, default=str)


class _PlainFormatter(logging.Formatter):
    """The terminal format, with ``[conn_id user]`` after the logger when a socket is known."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        conn_id = CONN_ID.get()
        if conn_id is None:
            return line
        prefix, sep, rest = line.partition(": ")
        return f"{prefix} [{conn_id} {USER.get() or '-'}]{sep}{rest}"


def configure(log_format: str, level: str, replica: str) -> None:
    """Send every logger's records to stderr in ``log_format``; replaces the root handlers.

    Call once per process, before uvicorn starts (``uvicorn_log_config`` tells uvicorn to
    leave logging alone, so its lines come here too).
    """
    if log_format not in FORMATS:
        raise ValueError(f"expected a log format in {FORMATS}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(replica) if log_format == "json" else _PlainFormatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True


def uvicorn_log_config(log_format: str) -> dict[str, Any] | None:
    """The ``log_config`` for uvicorn: its own (coloured) default for ``plain``, none for
    ``json`` (uvicorn then configures nothing and its loggers propagate to ours)."""
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
