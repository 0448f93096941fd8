"""The broker-data-loss verdicts of streams/dataloss.py `DataLossDetector` (pure: no broker)."""

from __future__ import annotations

from streams.dataloss import DataLossDetector

T = ("p.leadflow.transitions", 0)
WATCHED = ["p.leadflow.transitions", "p.leadflow.dlq"]
ALL = set(WATCHED)


def test_a_healthy_broker_gets_no_verdict_again_and_again() -> None:
    detector = DataLossDetector()
    for offset in (0, 5, 5, 9):
        assert detector.verdict(WATCHED, ALL | {"other"}, {T: offset}, {T: 12}) is None


def test_a_watched_topic_that_existed_and_is_gone_is_data_loss() -> None:
    detector = DataLossDetector()
    assert detector.verdict(WATCHED, ALL, {}, {}) is None
    reason = detector.verdict(WATCHED, {"p.leadflow.transitions"}, {}, {})
    assert reason == "topics p.leadflow.dlq existed and are gone"


def test_a_topic_not_created_yet_or_not_watched_or_an_unanswered_listing_is_no_verdict() -> None:
    detector = DataLossDetector()
    # not there yet (never seen): topics are created after the process started
    assert detector.verdict(WATCHED, {"p.leadflow.transitions"}, {}, {}) is None
    assert detector.verdict(WATCHED, ALL | {"other"}, {}, {}) is None
    # a topic nobody watches went away
    assert detector.verdict(WATCHED, ALL, {}, {}) is None
    # the broker did not answer: no verdict on topics, and nothing is forgotten meanwhile
    assert detector.verdict(WATCHED, None, {}, {}) is None
    assert detector.verdict(WATCHED, set(), {}, {}) is not None


def test_a_committed_offset_that_went_back_or_is_gone_is_data_loss() -> None:
    detector = DataLossDetector()
    assert detector.verdict(WATCHED, ALL, {T: 7}, {T: 7}) is None
    back = detector.verdict(WATCHED, ALL, {T: 3}, {T: 7})
    assert back == (
        "the committed offset of p.leadflow.transitions[0] was 7 and is now 3 "
        "(the group's offsets are gone)"
    )
    gone = detector.verdict(WATCHED, ALL, {T: None}, {T: 7})
    assert gone is not None and "was 7 and is now none" in gone


def test_an_offset_committed_by_us_counts_even_if_never_read_back() -> None:
    detector = DataLossDetector()
    detector.committed_by_us({T: 10})
    detector.committed_by_us({T: 4})  # an older commit does not lower what the broker must show
    assert detector.verdict(WATCHED, ALL, {T: 10}, {T: 10}) is None
    reason = detector.verdict(WATCHED, ALL, {T: None}, {T: 10})
    assert reason is not None and "was 10 and is now none" in reason


def test_a_committed_zero_that_disappears_is_no_verdict() -> None:
    """Offset 0 committed is the same position as none committed: nothing can be lost."""
    detector = DataLossDetector()
    detector.committed_by_us({T: 0})
    assert detector.verdict(WATCHED, ALL, {T: None}, {T: 0}) is None


def test_a_committed_offset_ahead_of_the_log_end_is_data_loss() -> None:
    detector = DataLossDetector()
    assert detector.verdict(WATCHED, ALL, {T: 12}, {T: 12}) is None  # at the end: caught up
    reason = detector.verdict(WATCHED, ALL, {T: 12}, {T: 4})
    assert reason == (
        "the committed offset of p.leadflow.transitions[0] (12) is ahead of the log end (4): "
        "records were lost"
    )


def test_an_unknown_log_end_or_an_unanswered_partition_is_no_verdict() -> None:
    detector = DataLossDetector()
    assert detector.verdict(WATCHED, ALL, {T: 12}, {T: None}) is None  # no fetch response yet
    assert detector.verdict(WATCHED, ALL, {T: 12}, {}) is None
    # the partition was not answered this time (left out of `committed`): not "gone"
    assert detector.verdict(WATCHED, ALL, {}, {T: 12}) is None
    # ...but what was seen is still remembered
    assert detector.verdict(WATCHED, ALL, {T: 2}, {T: 12}) is not None


def test_each_partition_is_judged_on_its_own() -> None:
    detector = DataLossDetector()
    other = ("p.leadflow.transitions", 1)
    assert detector.verdict(WATCHED, ALL, {T: 5, other: 9}, {T: 5, other: 9}) is None
    reason = detector.verdict(WATCHED, ALL, {T: 5, other: 1}, {T: 5, other: 9})
    assert reason is not None and "transitions[1] was 9 and is now 1" in reason
