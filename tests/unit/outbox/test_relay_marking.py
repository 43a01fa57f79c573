"""Which rows of a relay batch are marked published after a partial failure."""

from __future__ import annotations

from outbox.events import rows_to_mark


def test_everything_settled_marks_everything() -> None:
    assert rows_to_mark(["a", "b", "a"], [True, True, True]) == [0, 1, 2]


def test_nothing_settled_marks_nothing() -> None:
    assert rows_to_mark(["a", "b"], [False, False]) == []


def test_a_key_stops_at_its_first_unsettled_row_other_keys_go_on() -> None:
    keys = ["a", "b", "a", "c", "a", "b"]
    settled = [True, True, False, True, True, True]
    # a's third row was acknowledged, but after a failed one: published again next pass
    assert rows_to_mark(keys, settled) == [0, 1, 3, 5]


def test_an_acknowledged_row_behind_any_failure_of_its_key_waits() -> None:
    keys = ["a", "a", "a", "b", "b"]
    settled = [False, True, True, True, False]
    assert rows_to_mark(keys, settled) == [3]


def test_empty_batch() -> None:
    assert rows_to_mark([], []) == []
