"""Topic names and user ids (docs/protocol.md §2), and stream offsets (§5, §8).

Every id, topic and offset that enters the hub passes through here, so a wildcard
(``*``, ``#``) or an empty segment can never reach a queue binding, and an offset is
parsed and formatted in exactly one place (``Offset``).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,128}")
# ASCII digits only: ``\d`` would also take Unicode digits (Arabic-Indic, Devanagari, ...), which ``int`` reads.
_OFFSET = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")

USER_PREFIX = "user."
MAX_TOPIC_SEGMENTS = 8


class InvalidTopic(ValueError):
    """A user id, topic or offset that the hub refuses."""


def validate_user_id(user: object) -> str:
    """Return ``user`` if it is a valid user id (``[A-Za-z0-9_-]{1,128}``), else raise InvalidTopic."""
    if not isinstance(user, str) or not _SEGMENT.fullmatch(user):
        raise InvalidTopic(f"expected a user id matching [A-Za-z0-9_-]{{1,128}}, got {user!r:.80}")
    return user


def validate_topic(topic: object) -> str:
    """Return ``topic`` if each of its dot-separated segments is valid, else raise InvalidTopic.

    A topic has 1 to ``MAX_TOPIC_SEGMENTS`` segments, each ``[A-Za-z0-9_-]{1,128}``.
    """
    if not isinstance(topic, str):
        raise InvalidTopic(f"expected a topic string, got {type(topic).__name__}")
    segments = topic.split(".")
    if len(segments) > MAX_TOPIC_SEGMENTS or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise InvalidTopic(
            f"expected a topic of 1-{MAX_TOPIC_SEGMENTS} segments matching [A-Za-z0-9_-]{{1,128}} "
            f"joined by '.', got {topic!r:.80}"
        )
    return topic


def user_topic(user: str) -> str:
    """The personal topic of ``user`` (validated): ``user.<id>``."""
    return USER_PREFIX + validate_user_id(user)


def topic_user(topic: str) -> str | None:
    """The user id of a personal topic ``user.<id>``, or None for any other topic."""
    if topic.startswith(USER_PREFIX) and topic.count(".") == 1:
        return topic[len(USER_PREFIX) :]
    return None


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
