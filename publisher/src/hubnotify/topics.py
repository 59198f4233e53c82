"""User ids and topic names (docs/protocol.md §2): the one definition, shared with the hub.

Every id and topic that enters the hub or leaves a publisher passes through here, so a
wildcard (``*``, ``#``) or an empty segment can never reach a routing key or a queue
binding. ``hub.topics`` re-exports these names and adds stream offsets.
"""

from __future__ import annotations

import re
from typing import Final

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,128}")

USER_PREFIX: Final = "user."
MAX_TOPIC_SEGMENTS: Final = 8


class InvalidTopic(ValueError):
    """A user id, topic or offset that the hub refuses."""


def validate_user_id(user: object) -> str:
    """Return ``user`` if it is a valid user id (``[A-Za-z0-9_-]{1,128}``), else raise InvalidTopic."""
    if not isinstance(user, str) or not _SEGMENT.fullmatch(user):
        raise InvalidTopic(f"expected a user id matching [A-Za-z0-9_-]{{1,128}}, got {user!r:.80}")
    return user


def as_user_id(user: str | int) -> str:
    """``user`` as a user id: an integer (a database key) becomes its decimal text, ``42`` → ``"42"``.

    What a publisher or a token minter is given; the hub itself only ever sees the text.
    Raises InvalidTopic for anything else that is not a valid user id (``True`` included).
    """
    if type(user) is int:
        return validate_user_id(str(user))
    return validate_user_id(user)


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
