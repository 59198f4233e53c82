"""The seam between a session and its replica (docs/protocol.md §3).

A session needs a few things of the replica that runs it: the settings, the backend,
a way to verify tokens, the metrics, and a roll call of open connections (so a drain
can close them). ``Host`` names exactly that; ``hub.node.Node`` is one, and a test may
bring its own. The replica, in turn, sees a session only as ``Closable``. So neither
``hub.session`` nor ``hub.node`` imports the other.
"""

from __future__ import annotations

from typing import Protocol

from hub.auth import Claims
from hub.backends.base import Backend
from hub.codes import CloseCode
from hub.metrics import Metrics
from hub.settings import Settings


class Closable(Protocol):
    """An open connection as the replica sees it: something it can ask to close."""

    def close(self, code: CloseCode | None, message: str = "") -> None:
        """Ask for a close with ``code`` (None: the peer is gone) and ``message``; returns at once."""
        ...


class Verifier(Protocol):
    """Turns a token into claims, or raises ``hub.auth.TokenError`` (``hub.auth.Authenticator``)."""

    def verify(self, token: str) -> Claims:
        """The claims of a valid token."""
        ...


class Host(Protocol):
    """What a session needs of its replica."""

    @property
    def settings(self) -> Settings:
        """The replica's configuration."""
        ...

    @property
    def backend(self) -> Backend:
        """The broker, history and presence engines."""
        ...

    @property
    def auth(self) -> Verifier:
        """The token check."""
        ...

    @property
    def metrics(self) -> Metrics:
        """Where the session counts what happens."""
        ...

    def register(self, session: Closable) -> None:
        """Count an open session; the host may ``close`` it (a drain) from then on."""
        ...

    def unregister(self, session: Closable) -> None:
        """Forget a closed session; idempotent."""
        ...
