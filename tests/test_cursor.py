"""The per-topic cursor and the Offset value type, without a server (docs/protocol.md §5, §8)."""

from __future__ import annotations

import pytest

from hub.backends.base import HistoryRead
from hub.cursor import Cursor
from hub.notification import Notification
from hub.topics import MAX_OFFSET_PART, ZERO, InvalidTopic, Offset


def note(topic: str, offset: str | None, data: object = None) -> Notification:
    return Notification(id=f"{topic}@{offset}", topic=topic, offset=offset, ts=0, data=data)


# ------------------------------------------------------------------------ Offset


def test_offset_orders_by_both_numbers_and_round_trips() -> None:
    assert Offset.parse("10-0") > Offset.parse("9-99")
    assert Offset.parse("10-10") > Offset.parse("10-9")
    assert str(Offset.parse("1700000000000-3")) == "1700000000000-3"
    assert str(Offset.parse("007-01")) == "7-1"  # one wire form: what the hub sends back is normalised
    assert Offset.parse("0-0") == ZERO


def test_offset_parts_up_to_2_64_minus_1() -> None:
    top = f"{MAX_OFFSET_PART}-{MAX_OFFSET_PART}"
    assert Offset.parse(top) == Offset(2**64 - 1, 2**64 - 1)
    for bad in [f"{2**64}-0", f"0-{2**64}", "99999999999999999999-0"]:
        with pytest.raises(InvalidTopic, match="2\\^64"):
            Offset.parse(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "\u0661-\u0662",  # Arabic-Indic digits: \d takes them, int() reads them
        "\u0967\u0968-0",  # Devanagari
        "1-\uff12",  # fullwidth
        "\u00b9-0",  # superscript
        "1-2\n",
        " 1-2",
        "+1-2",
        "1_0-2",
        "",
        "1",
        "1-",
        "-1",
        "a-b",
        "1-2-3",
        "0" * 21 + "-0",
    ],
)
def test_offset_refuses_anything_but_ascii_digits(bad: str) -> None:
    with pytest.raises(InvalidTopic):
        Offset.parse(bad)


@pytest.mark.parametrize("bad", [None, 5, 1.5, b"1-2", ["1", "2"]])
def test_offset_refuses_non_strings(bad: object) -> None:
    with pytest.raises(InvalidTopic, match="string"):
        Offset.parse(bad)


# ------------------------------------------------------------------------ Cursor


def test_a_topic_without_since_starts_at_its_latest_offset() -> None:
    cursor = Cursor()
    start = cursor.start(["user.1", "team.7"], {}, {"user.1": Offset(5, 0), "team.7": ZERO})
    assert start.read_after == {}
    assert start.recovered({})
    assert cursor.positions() == {"user.1": "5-0", "team.7": "0-0"}
    assert not cursor.admit("user.1", Offset(5, 0))  # published before connected: not for this socket
    assert cursor.admit("user.1", Offset(5, 1))


def test_a_since_within_history_is_read_after() -> None:
    cursor = Cursor()
    start = cursor.start(["user.1"], {"user.1": Offset(3, 0)}, {"user.1": Offset(9, 0)})
    assert start.read_after == {"user.1": "3-0"}
    reads = {"user.1": HistoryRead([note("user.1", "4-0"), note("user.1", "9-0")], complete=True)}
    replay = cursor.replay(reads)
    assert [n.offset for n in replay] == ["4-0", "9-0"]
    assert start.recovered(reads)
    assert cursor.positions() == {"user.1": "9-0"}


def test_a_since_older_than_retention_is_not_recovered() -> None:
    cursor = Cursor()
    start = cursor.start(["user.1"], {"user.1": Offset(1, 0)}, {"user.1": Offset(9, 0)})
    reads = {"user.1": HistoryRead([note("user.1", "8-0"), note("user.1", "9-0")], complete=False)}
    assert len(cursor.replay(reads)) == 2
    assert not start.recovered(reads)


def test_a_future_since_is_clamped_to_the_latest_offset() -> None:
    cursor = Cursor()
    start = cursor.start(
        ["user.1", "team.7"],
        {"user.1": Offset(2**64 - 1, 0), "team.7": Offset(4, 0)},
        {"user.1": Offset(9, 0), "team.7": Offset(5, 0)},
    )
    assert start.clamped == {"user.1"}
    assert start.read_after == {"team.7": "4-0"}  # nothing is read after a made-up offset
    assert not start.recovered({"team.7": HistoryRead([], complete=True)})
    assert cursor.positions()["user.1"] == "9-0"
    # live delivery continues: the next notification of the topic is new
    assert cursor.admit("user.1", Offset(9, 1))


def test_a_since_on_a_topic_with_no_history_is_clamped_to_zero() -> None:
    cursor = Cursor()
    start = cursor.start(["user.1"], {"user.1": Offset(1, 0)}, {"user.1": ZERO})
    assert start.clamped == {"user.1"}
    assert cursor.positions() == {"user.1": "0-0"}
    assert cursor.admit("user.1", Offset(1, 0))


def test_admit_suppresses_duplicates_and_old_offsets_per_topic() -> None:
    cursor = Cursor()
    cursor.start(["user.1", "team.7"], {}, {})
    assert cursor.admit("user.1", Offset(5, 0))
    assert not cursor.admit("user.1", Offset(5, 0))  # the same one again (live after replay)
    assert not cursor.admit("user.1", Offset(4, 9))  # an older one
    assert cursor.admit("team.7", Offset(4, 9))  # another topic has its own position
    assert cursor.admit("user.1", Offset(5, 1))


def test_without_offsets_everything_is_new() -> None:
    cursor = Cursor()
    cursor.start(["user.1"], {}, {})
    assert cursor.admit("user.1", None)
    assert cursor.admit("user.1", None)
    assert cursor.positions() == {"user.1": "0-0"}


def test_replay_then_live_overlap_delivers_each_once_in_order() -> None:
    cursor = Cursor()
    cursor.start(["user.1"], {"user.1": Offset(1, 0)}, {"user.1": Offset(3, 0)})
    replayed = cursor.replay({"user.1": HistoryRead([note("user.1", "2-0"), note("user.1", "3-0")], complete=True)})
    live = [note("user.1", "3-0"), note("user.1", "3-1"), note("user.1", "2-0"), note("user.1", "4-0")]
    fresh = cursor.admit_all(live)
    assert [n.offset for n in replayed + fresh] == ["2-0", "3-0", "3-1", "4-0"]


def test_backfill_reads_after_each_position() -> None:
    cursor = Cursor()
    cursor.start(["user.1", "team.7"], {}, {"user.1": Offset(5, 0)})
    cursor.admit("user.1", Offset(6, 2))
    assert cursor.positions() == {"user.1": "6-2", "team.7": "0-0"}
    got = cursor.replay(
        {
            "user.1": HistoryRead([note("user.1", "6-2"), note("user.1", "6-3")], complete=True),
            "team.7": HistoryRead([note("team.7", "1-0")], complete=True),
        }
    )
    assert [(n.topic, n.offset) for n in got] == [("user.1", "6-3"), ("team.7", "1-0")]
