"""How a ``hub serve`` process sets up CPython's cyclic garbage collector (docs/operations.md §2).

A replica keeps thousands of long-lived objects per hundred sockets, and makes short-lived
ones (a delivery, a batch waiting for its confirms) at every notification. With CPython's
default thresholds a young collection runs every 700 allocations, so objects that live a
few milliseconds are still alive at one, are promoted, and count towards the next *full*
collection, which runs once the promoted objects reach a quarter of the old generation and
walks all of it. Measured on a replica with 1,000 sockets, history on, 1,000-3,000
notifications/s: full collections of 119,000-182,000 objects took 69-122 ms each, every few
seconds, a stall of every socket of the replica (the p99 of such a step rose from 5-13 ms to
up to 81 ms; docs/benchmarks.md, third round of issue 12).

Two changes:

- ``tune``: a young collection every ``YOUNG`` allocations instead of 700; in between,
  short-lived objects are freed by reference counting and never promoted, so full
  collections become rare. A young collection then walks more objects, but each object
  is still walked once while young.
- ``freeze``: once the replica has started, what imports and start-up made (modules,
  classes, settings, connections: tens of thousands of objects that live as long as the
  process) is moved out of the collector's sight (``gc.freeze``), so no full collection
  walks it again. The price: a start-up object that later becomes cyclic garbage (a
  connection replaced after an outage) is never collected, a bounded amount, once.

Only ``hub serve`` calls these (a process of its own); the library and the tests do not.
"""

from __future__ import annotations

import gc

#: Allocations (net of deallocations) between two young collections (CPython: 700).
YOUNG = 10_000


def tune() -> None:
    """Raise the young generation's threshold; the older generations' stay CPython's."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)


def freeze() -> None:
    """Collect once, then keep everything alive now out of every later collection."""
    gc.collect()
    gc.freeze()
