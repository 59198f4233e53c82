"""Backends, chosen by configuration; each engine's module is imported only when chosen."""

from __future__ import annotations

from hub.backends.base import Backend
from hub.settings import Settings


def create_backend(settings: Settings) -> Backend:
    """The distributed backend when HUB_AMQP_URL and HUB_REDIS_URL are set, else the embedded one."""
    if settings.distributed:
        from hub.backends.distributed import DistributedBackend

        return DistributedBackend(settings)
    from hub.backends.memory import MemoryBackend

    return MemoryBackend(settings)
