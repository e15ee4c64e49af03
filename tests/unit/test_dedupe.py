"""The router's dedupe window: first sight, TTL, memory bound, chunks and restore."""

from __future__ import annotations

import uuid

import pytest

from pipelines.dedupe import DedupeWindow

TTL = 1_000


def ids(n: int) -> list[int]:
    return [uuid.UUID(int=i + 1).int for i in range(n)]


def test_first_sight_then_duplicate() -> None:
    window = DedupeWindow(TTL, max_ids=100, segment_size=4)
    a, b = ids(2)
    assert window.first_seen(a, 10)
    assert not window.first_seen(a, 10)
    assert window.first_seen(b, 5)  # older timestamps are fine
    assert not window.first_seen(a, 5)
    assert len(window) == 2


def test_ids_expire_with_their_closed_segment_once_stream_time_passes_the_ttl() -> None:
    window = DedupeWindow(TTL, max_ids=100, segment_size=2)
    a, b, c = ids(3)
    window.first_seen(a, 0)
    window.first_seen(b, 100)  # segment 0 closed, newest 100
    window.first_seen(c, 200)  # segment 1, still filling
    assert not window.first_seen(a, TTL + 99)  # stream time 1099 < 100 + TTL
    assert window.first_seen(a, TTL + 100)  # stream time reaches 100 + TTL: segment 0 went
    assert not window.first_seen(c, TTL + 150)  # segment 1 (now closed) is younger


def test_the_segment_still_filling_is_kept_whatever_its_age() -> None:
    window = DedupeWindow(TTL, max_ids=100, segment_size=4)
    [a] = ids(1)
    window.first_seen(a, 0)
    assert not window.first_seen(a, 10 * TTL)


def test_a_duplicate_alone_moves_stream_time() -> None:
    window = DedupeWindow(TTL, max_ids=100, segment_size=1)
    a, b = ids(2)
    window.first_seen(a, 0)
    window.first_seen(b, 1)
    assert not window.first_seen(b, TTL)  # a duplicate, yet stream time moved to TTL...
    assert window.first_seen(a, TTL)  # ...which expired a's segment


def test_memory_bound_drops_the_oldest_segment_early(caplog: pytest.LogCaptureFixture) -> None:
    window = DedupeWindow(TTL, max_ids=4, segment_size=2)
    first, *rest = ids(5)
    window.first_seen(first, 0)
    with caplog.at_level("WARNING", logger="pipelines.dedupe"):
        for event_id in rest:
            window.first_seen(event_id, 1)
    assert len(window) == 3
    assert window.evicted_early == 2
    assert window.first_seen(first, 1)  # forgotten before its TTL
    assert "forgotten before their TTL" in caplog.text


def test_changes_name_only_what_moved_since_the_last_take() -> None:
    window = DedupeWindow(TTL, max_ids=100, segment_size=2)
    a, b, c, d = ids(4)
    assert window.take_changes() == ({}, set())
    window.first_seen(a, 0)
    window.first_seen(b, 0)
    window.first_seen(c, 0)
    upserts, deleted = window.take_changes()
    assert sorted(upserts) == window.chunk_names() == ["ids-000000000000", "ids-000000000001"]
    assert deleted == set()
    assert window.take_changes() == ({}, set())  # nothing new: nothing rewritten
    window.first_seen(d, TTL)  # fills segment 1; segment 0 expires
    upserts, deleted = window.take_changes()
    assert list(upserts) == ["ids-000000000001"]
    assert deleted == {"ids-000000000000"}


def test_restored_window_answers_as_before_and_appends_to_a_new_segment() -> None:
    window = DedupeWindow(TTL, max_ids=100, segment_size=3)
    known = ids(7)
    for i, event_id in enumerate(known):
        window.first_seen(event_id, i)
    chunks, _ = window.take_changes()

    restored = DedupeWindow.restore(chunks, TTL, max_ids=100, segment_size=3)
    assert len(restored) == 7
    assert restored.stream_time_ms == 6
    assert all(not restored.first_seen(event_id, 6) for event_id in known)
    new = uuid.uuid4().int
    assert restored.first_seen(new, 7)
    upserts, _ = restored.take_changes()
    assert list(upserts) == ["ids-000000000003"]  # restored segments are never rewritten


def test_restore_of_nothing_is_an_empty_window() -> None:
    window = DedupeWindow.restore({}, TTL, max_ids=10, segment_size=2)
    assert len(window) == 0 and window.chunk_names() == []


def test_restore_refuses_a_gap_in_the_segments() -> None:
    window = DedupeWindow(TTL, max_ids=100, segment_size=1)
    for i, event_id in enumerate(ids(3)):
        window.first_seen(event_id, i)
    chunks, _ = window.take_changes()
    del chunks["ids-000000000001"]
    with pytest.raises(ValueError, match="not contiguous"):
        DedupeWindow.restore(chunks, TTL, max_ids=100, segment_size=1)


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        DedupeWindow(0, max_ids=10)
    with pytest.raises(ValueError):
        DedupeWindow(TTL, max_ids=1, segment_size=2)
