"""Real-time notification hub: AMQP in, WebSocket out, Redis-backed presence and recovery."""

from __future__ import annotations

__version__ = "0.1.0"
