"""Publish to a notification hub from Python (distribution ``notification-hub-publisher``).

- ``Publisher`` / ``BlockingPublisher``: confirmed AMQP publishing to the hub's exchange
  (``hubnotify.publisher``, ``hubnotify.blocking``), on one RabbitMQ node or a cluster's
  (``hubnotify.failover``), published again until a queue takes it (``hubnotify.confirm``,
  ``Unroutable``);
- ``mint_token``: the JWT your backend gives its logged-in user's browser (``hubnotify.tokens``);
- read state: ``Publisher.unread`` / ``notifications`` / ``mark_read`` over the hub's HTTP
  API (``hub_url=``, ``api_key=``), or ``hubnotify.reads.HubReads`` alone;
- presence: ``Publisher.is_online`` / ``online_many``, and ``hubnotify.presence`` for
  async and blocking queries without a publisher (the ``presence`` extra: redis-py);
- the contract's checks, shared with the hub: ``hubnotify.topics`` (user ids, topics),
  ``hubnotify.payload`` (what a notification may carry), ``hubnotify.message`` (the AMQP
  message, its id and ttl).

The hub server (distribution ``notification-hub``, import ``hub``) depends on this
package; this package never imports the hub. The protocol: docs/protocol.md.
"""

from __future__ import annotations

from hubnotify.blocking import BlockingPublisher
from hubnotify.confirm import Unroutable
from hubnotify.payload import BadPayload
from hubnotify.publisher import Publisher
from hubnotify.reads import HubReads, ReadsError
from hubnotify.tokens import mint_token
from hubnotify.topics import InvalidTopic

__version__ = "0.1.0"

__all__ = [
    "BadPayload",
    "BlockingPublisher",
    "HubReads",
    "InvalidTopic",
    "Publisher",
    "ReadsError",
    "Unroutable",
    "__version__",
    "mint_token",
]
