"""Topic names and user ids (DESIGN.md §2), and stream offsets (§5).

Every id and topic that enters the hub passes through here, so a wildcard
(``*``, ``#``) or an empty segment can never reach a queue binding.
"""

from __future__ import annotations

import re

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,128}")
_OFFSET = re.compile(r"(\d{1,20})-(\d{1,20})")

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


def parse_offset(offset: object) -> tuple[int, int]:
    """Split an offset ``<ms>-<seq>`` into its two numbers, or raise InvalidTopic."""
    if not isinstance(offset, str):
        raise InvalidTopic(f"expected an offset string '<ms>-<seq>', got {type(offset).__name__}")
    match = _OFFSET.fullmatch(offset)
    if match is None:
        raise InvalidTopic(f"expected an offset '<ms>-<seq>', got {offset!r:.40}")
    return int(match.group(1)), int(match.group(2))


def format_offset(ms: int, seq: int) -> str:
    """The string form of an offset."""
    return f"{ms}-{seq}"


ZERO_OFFSET = "0-0"
