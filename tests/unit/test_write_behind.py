"""WriteBehind (the sink's writer thread): order, gathering, failures kept and retried in
order, a bound on what waits, and dropping; with a fake write, no lake."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pipelines.sink.behind import CatchUp, WriteBehind, WriteFailing


class Batch:
    """Numbers gathered for one write."""

    def __init__(self, items: list[int] | None = None) -> None:
        self.items = list(items or [])

    def __len__(self) -> int:
        return len(self.items)

    def absorb(self, other: Batch) -> None:  # type: ignore[override]
        self.items += other.items
        other.items = []


class Lake:
    """A fake write: records every batch written; can be made to fail or to block."""

    def __init__(self) -> None:
        self.written: list[list[int]] = []
        self.failing: Exception | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.failures: list[BaseException] = []

    def write(self, batch: Batch) -> None:
        self.started.set()
        self.gate.wait(10)
        if self.failing is not None:
            raise self.failing
        self.written.append(list(batch.items))


def behind(lake: Lake, limit: int = 1000, retry_after: float = 30.0) -> WriteBehind[Batch]:
    return WriteBehind(
        lake.write, Batch, errors=(OSError,), failed=lake.failures.append, limit=limit,
        retry_after=retry_after,
    )  # fmt: skip


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_batches_handed_over_while_a_write_runs_are_written_next_as_one() -> None:
    lake = Lake()
    writes = behind(lake)
    lake.gate.clear()
    writes.put(Batch([1, 2]))
    assert lake.started.wait(5)  # [1, 2] is being written; the next two wait
    writes.put(Batch([3]))
    writes.put(Batch([4, 5]))
    assert writes.pending == 5
    lake.gate.set()
    writes.wait()
    assert lake.written == [[1, 2], [3, 4, 5]]
    assert writes.pending == 0
    writes.close()


def test_a_failed_write_is_kept_retried_first_and_nothing_is_reordered() -> None:
    lake = Lake()
    writes = behind(lake)
    lake.failing = OSError("No space left on device")
    writes.put(Batch([1, 2]))
    eventually(lambda: len(lake.failures) == 1)
    with pytest.raises(WriteFailing, match="No space left"):  # told once, no retry yet
        writes.put(Batch([3]))
    assert len(lake.failures) == 1
    with pytest.raises(WriteFailing):  # told before: retried at once, failed again
        writes.put(Batch([3]))
    assert len(lake.failures) == 2
    lake.failing = None
    writes.put(Batch([3]))  # the retry succeeds: [3] is queued behind [1, 2]
    writes.wait()
    assert lake.written == [[1, 2], [3]]
    writes.close()


def test_a_failing_write_is_retried_on_its_own_after_a_while() -> None:
    lake = Lake()
    writes = behind(lake, retry_after=0.05)
    lake.failing = OSError("catalog locked")
    writes.put(Batch([1]))
    eventually(lambda: len(lake.failures) >= 2)  # nobody came by: it tried again itself
    lake.failing = None
    eventually(lambda: lake.written == [[1]])
    writes.close()


def test_an_unexpected_error_is_raised_as_itself() -> None:
    lake = Lake()
    writes = behind(lake)
    lake.failing = ValueError("a bug")
    writes.put(Batch([1]))
    with pytest.raises(ValueError, match="a bug"):
        writes.wait()
    writes.close()


def test_put_waits_while_more_than_the_limit_is_queued() -> None:
    lake = Lake()
    writes = behind(lake, limit=3)
    lake.gate.clear()
    writes.put(Batch([1]))
    assert lake.started.wait(5)
    writes.put(Batch([2, 3, 4]))  # queued: 3, at the limit
    done = threading.Event()

    def put_more() -> None:
        writes.put(Batch([5]))
        done.set()

    threading.Thread(target=put_more, daemon=True).start()
    assert not done.wait(0.2)  # waits for the writer
    lake.gate.set()
    assert done.wait(5)
    writes.wait()
    assert [item for batch in lake.written for item in batch] == [1, 2, 3, 4, 5]
    writes.close()


def test_drop_forgets_what_is_not_written_after_the_write_in_progress() -> None:
    lake = Lake()
    writes = behind(lake)
    lake.gate.clear()
    writes.put(Batch([1]))
    assert lake.started.wait(5)
    writes.put(Batch([2]))
    threading.Timer(0.1, lake.gate.set).start()
    writes.drop()  # waits for [1], forgets [2]
    assert lake.written == [[1]] and writes.pending == 0
    writes.put(Batch([3]))
    writes.wait()
    assert lake.written == [[1], [3]]
    writes.close()


def test_drop_ends_the_retries_of_a_failing_write() -> None:
    lake = Lake()
    writes = behind(lake, retry_after=0.05)
    lake.failing = OSError("disk full")
    writes.put(Batch([1]))
    eventually(lambda: len(lake.failures) >= 1)
    writes.drop()
    assert writes.pending == 0
    lake.failing = None
    writes.put(Batch([2]))
    writes.wait()
    assert lake.written == [[2]]
    writes.close()


# --- catching up: larger writes behind a fast input ------------------------------------------


@pytest.fixture
def catching_up() -> Iterator[tuple[Lake, WriteBehind[Batch]]]:
    """A write-behind that gathers up to 1,000 while its input is behind, waiting up to
    30 s (a test that sees its write within 5 s did not wait)."""
    lake = Lake()
    wb = WriteBehind(
        lake.write, Batch, errors=(OSError,), failed=lake.failures.append, limit=100_000,
        retry_after=30.0, catch_up=CatchUp(batch_records=1000, wait_s=30.0),
    )  # fmt: skip
    yield lake, wb
    wb.close()


def test_behind_a_fast_input_a_write_waits_for_a_larger_batch(
    catching_up: tuple[Lake, WriteBehind[Batch]],
) -> None:
    lake, wb = catching_up
    for start in range(0, 1000, 200):  # five checkpoints of 200 from a backlog
        wb.put(Batch(list(range(start, start + 200))), behind=True)
        time.sleep(0.02)
    eventually(lambda: len(lake.written) == 1)
    assert lake.written == [list(range(1000))]  # one write, once the batch was full


def test_the_input_catching_up_ends_the_wait_for_a_larger_batch(
    catching_up: tuple[Lake, WriteBehind[Batch]],
) -> None:
    lake, wb = catching_up
    wb.put(Batch(list(range(500))), behind=True)
    time.sleep(0.05)
    assert lake.written == []  # gathering: the backlog goes on
    wb.put(Batch([500, 501]), behind=False)  # the last records of the backlog
    eventually(lambda: lake.written == [list(range(502))])


def test_at_a_trickle_a_write_goes_at_once(catching_up: tuple[Lake, WriteBehind[Batch]]) -> None:
    lake, wb = catching_up
    wb.put(Batch([1, 2, 3]))
    eventually(lambda: lake.written == [[1, 2, 3]])


def test_waiting_for_the_writes_cuts_the_gathering_short(
    catching_up: tuple[Lake, WriteBehind[Batch]],
) -> None:
    lake, wb = catching_up
    wb.put(Batch(list(range(500))), behind=True)  # under batch_records
    done = threading.Thread(target=wb.wait)
    done.start()
    done.join(5)
    assert not done.is_alive() and lake.written == [list(range(500))]
