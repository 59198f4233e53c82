"""Topic names and user ids (docs/protocol.md §2), and stream offsets (§5, §8).

Every id, topic and offset that enters the hub passes through here, so a wildcard
(``*``, ``#``) or an empty segment can never reach a queue binding, and an offset is
parsed and formatted in exactly one place (``Offset``). Ids and topics are defined once,
in the publish helper (``hubnotify.topics``: publishers check them before they send),
and re-exported here; offsets are the hub's own.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

# Ids and topics: the publish helper's (one definition), re-exported.
from hubnotify.topics import MAX_TOPIC_SEGMENTS as MAX_TOPIC_SEGMENTS
from hubnotify.topics import USER_PREFIX as USER_PREFIX
from hubnotify.topics import InvalidTopic as InvalidTopic
from hubnotify.topics import topic_user as topic_user
from hubnotify.topics import user_topic as user_topic
from hubnotify.topics import validate_topic as validate_topic
from hubnotify.topics import validate_user_id as validate_user_id

# ASCII digits only: ``\d`` would also take Unicode digits (Arabic-Indic, Devanagari, ...), which ``int`` reads.
_OFFSET = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


#: Each part of an offset is an unsigned 64-bit number, as in a Redis stream id.
MAX_OFFSET_PART: Final = 2**64 - 1


class Offset(NamedTuple):
    """A position in a topic's stream, ``<ms>-<seq>`` (the Redis stream id form, §5).

    Offsets order by both numbers (a tuple compares that way); ``str`` gives the wire
    form, ``Offset.parse`` reads it. Both parts are at most ``MAX_OFFSET_PART``.
    """

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: object) -> Offset:
        """Read ``<ms>-<seq>`` (ASCII digits, each part below 2^64), or raise InvalidTopic."""
        if not isinstance(text, str):
            raise InvalidTopic(f"expected an offset string '<ms>-<seq>', got {type(text).__name__}")
        match = _OFFSET.fullmatch(text)
        if match is None:
            raise InvalidTopic(f"expected an offset '<ms>-<seq>' of ASCII digits, got {text!r:.40}")
        ms, seq = int(match.group(1)), int(match.group(2))
        if ms > MAX_OFFSET_PART or seq > MAX_OFFSET_PART:
            raise InvalidTopic(f"expected each part of an offset to be below 2^64, got {text!r:.50}")
        return cls(ms, seq)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ZERO: Final = Offset(0, 0)
#: The wire form of ``ZERO``: the offset of a topic with no history yet.
ZERO_OFFSET: Final = "0-0"


def parse_offset(offset: object) -> Offset:
    """``Offset.parse``, for importers of the function form."""
    return Offset.parse(offset)


def format_offset(ms: int, seq: int) -> str:
    """The wire form of an offset (``str(Offset(ms, seq))``)."""
    return str(Offset(ms, seq))
