"""Ids, topics and offsets (docs/protocol.md §2, §5): wildcards never pass."""

from __future__ import annotations

import pytest

from hub.topics import (
    InvalidTopic,
    Offset,
    format_offset,
    parse_offset,
    topic_user,
    user_topic,
    validate_topic,
    validate_user_id,
)


@pytest.mark.parametrize("user", ["42", "a", "A-b_9", "x" * 128])
def test_valid_user_ids(user: str) -> None:
    assert validate_user_id(user) == user
    assert user_topic(user) == f"user.{user}"
    assert topic_user(f"user.{user}") == user


@pytest.mark.parametrize("user", ["", "a.b", "*", "#", "a*", "user#", "x" * 129, "é", "a b", None, 42, "a\n"])
def test_invalid_user_ids(user: object) -> None:
    with pytest.raises(InvalidTopic):
        validate_user_id(user)


@pytest.mark.parametrize("topic", ["broadcast", "team.7", "a.b.c", "user.42"])
def test_valid_topics(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize("topic", ["", ".", "a.", ".a", "a..b", "team.*", "#", "a.#", "a.b.c.d.e.f.g.h.i", 7])
def test_invalid_topics(topic: object) -> None:
    with pytest.raises(InvalidTopic):
        validate_topic(topic)


def test_topic_user_of_other_topics() -> None:
    assert topic_user("team.7") is None
    assert topic_user("user.a.b") is None


def test_offsets_order_by_both_numbers() -> None:
    assert parse_offset("10-0") > parse_offset("9-99")
    assert parse_offset("10-10") > parse_offset("10-9")
    for bad in ["", "1", "1-", "-1", "a-b", "1-2-3", " 1-2", "\u0661-\u0662", f"{2**64}-0"]:
        with pytest.raises(InvalidTopic):
            parse_offset(bad)


def test_offset_functions_are_the_offset_type() -> None:
    assert parse_offset("5-1") == Offset(5, 1)
    assert format_offset(5, 1) == str(Offset(5, 1)) == "5-1"
