"""The Python publish helper, kept importable under its old name.

It lives in the light distribution ``notification-hub-publisher`` (``publisher/``,
import ``hubnotify``), which back-end services install without the hub's server stack;
new code imports ``hubnotify``. ``Publisher.from_settings(Settings.from_env(serving=False))``
works as before (the helper reads the ``Settings`` fields it needs, without importing the hub).
"""

from __future__ import annotations

from hubnotify.blocking import BlockingPublisher
from hubnotify.publisher import Publisher

__all__ = ["BlockingPublisher", "Publisher"]
