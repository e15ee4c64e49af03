"""Writing behind the consumer: batches written in order, in a thread of their own.

The sink's consumer thread (Quix's loop) hands each checkpoint's records to a
:class:`WriteBehind` and goes on consuming; its thread writes them. Whatever is handed
over while a write is in flight is gathered and written next, as one batch, so the writes
grow with the input and the lake's fixed cost per commit is paid once per write, not once
per checkpoint. DuckDB does its work outside the GIL, so on two cores consuming and
writing overlap.

While the caller says its input is far behind (reading a backlog), a write waits a
little for a larger batch (:class:`CatchUp`); otherwise every write goes at once.

Guarantees: batches are written in the order they were handed over, each record once; a
write that fails is kept and tried again (every :attr:`WriteBehind.retry_after` seconds,
or at once when asked) before anything newer; nothing is dropped unless :meth:`drop`
says so. The records handed over but not yet written are bounded (:attr:`limit`): past
it :meth:`put` waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("pipelines.sink")


class Gathering(Protocol):
    """Records gathered for one write: they can take another batch's in after them."""

    def __len__(self) -> int: ...

    def absorb(self, other: Gathering) -> None: ...


B = TypeVar("B", bound=Gathering)


@dataclass(frozen=True)
class CatchUp:
    """Larger writes while the input is far ahead of the writes.

    Each write pays the lake's fixed cost once (the sink's: about 160 ms for its 20-odd
    tables, whatever the size), so behind a fast input small writes spend most of the
    writer's CPU on it, beside the consumer on the same cores. Measured, the sink's writer
    alone on 302,443 records: 57,000 records/s in writes of 15,000, 125,000 in writes of
    50,000. While the caller says the input is behind (:meth:`WriteBehind.put`), a write
    about to start waits up to ``wait_s`` for ``batch_records``; it stops waiting as soon
    as a put says the input caught up, so the last records of a backlog are not held
    back, and at a trickle every write goes at once (freshness is unchanged).
    """

    batch_records: int
    wait_s: float


class WriteFailing(Exception):
    """The last write failed with one of the expected errors, and so did the retry
    :meth:`WriteBehind.put` or :meth:`WriteBehind.wait` asked for."""


class WriteBehind(Generic[B]):
    """Writes the batches :meth:`put` hands over, in order, in a thread of its own.

    ``write(batch)`` runs in that thread. If it raises, ``failed(exc)`` is called there,
    the batch is kept and written again before anything newer: after ``retry_after``
    seconds, or at once when :meth:`put` or :meth:`wait` comes by after the caller was told.
    Those tell by raising :class:`WriteFailing` for one of ``errors`` (the expected ones:
    the caller backs off), the error itself for another. ``empty()`` makes a new empty
    batch to gather into.
    """

    def __init__(
        self,
        write: Callable[[B], object],
        empty: Callable[[], B],
        *,
        errors: tuple[type[BaseException], ...],
        failed: Callable[[BaseException], None],
        limit: int,
        retry_after: float,
        catch_up: CatchUp | None = None,
        name: str = "write-behind",
    ) -> None:
        self._write = write
        self.catch_up = catch_up
        self._empty = empty
        self._errors = errors
        self._failed = failed
        self.limit = limit
        self.retry_after = retry_after
        self._cond = threading.Condition()
        self._queued: B = empty()
        self._current: B | None = None
        """The batch being written, or the failed one waiting to be written again."""
        self._failure: BaseException | None = None
        """Why the last write of :attr:`_current` failed (``None`` once one succeeds)."""
        self._outcomes = 0
        """Write attempts ended, failed or not (a retry is waited for by this count)."""
        self._reported = -1
        """The attempt whose failure the caller was last told of."""
        self._retry_now = False
        self._dropping = False
        self._closed = False
        self._input_behind = False
        """What the last :meth:`put` said of the input."""
        self._waiters = 0
        """Callers of :meth:`wait`: a write they wait for does not wait to gather more."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, batch: B, behind: bool = False) -> None:
        """Queue ``batch`` after everything before it; wait while more than
        :attr:`limit` records are queued. If a write failed, it is tried again first,
        and ``batch`` is not queued if that fails too (the caller gets the same records
        again later). ``behind``: more input is waiting to be read at once (the next
        write may wait for a larger batch: :class:`CatchUp`)."""
        with self._cond:
            self._check()
            while len(self._queued) >= self.limit:
                self._cond.wait()
                self._check()
            self._input_behind = behind
            if len(batch):
                self._queued.absorb(batch)
            self._cond.notify_all()

    def wait(self) -> None:
        """Wait until everything handed over is written (raises as :meth:`put`)."""
        with self._cond:
            self._waiters += 1
            self._cond.notify_all()
            try:
                self._check()
                while len(self._queued) or self._current is not None:
                    self._cond.wait()
                    self._check()
            finally:
                self._waiters -= 1

    def drop(self) -> None:
        """Forget what is not written yet (once the write in progress, if any, ends)."""
        with self._cond:
            self._dropping = True
            self._cond.notify_all()
            while self._current is not None:
                self._cond.wait()
            self._queued = self._empty()
            self._dropping = False

    def close(self) -> None:
        """:meth:`drop`, then end the thread."""
        self.drop()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    @property
    def pending(self) -> int:
        """Records handed over and not written yet."""
        with self._cond:
            current = len(self._current) if self._current is not None else 0
            return len(self._queued) + current

    def _check(self) -> None:
        """With the lock held: raise if a write failed. A failure the caller was told of
        already is tried again first, at once, and raised only if it fails again."""
        if self._failure is None:
            return
        if self._reported == self._outcomes:
            seen = self._outcomes
            self._retry_now = True
            self._cond.notify_all()
            while self._outcomes == seen and self._current is not None:
                self._cond.wait()
        failure = self._failure
        if failure is None:
            return
        self._reported = self._outcomes
        if isinstance(failure, self._errors):
            raise WriteFailing(str(failure)) from failure
        raise failure

    def _run(self) -> None:
        while True:
            with self._cond:
                while not len(self._queued) and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._gather()
                batch, self._queued = self._queued, self._empty()
                self._current = batch
            self._write_until_done(batch)

    def _gather(self) -> None:
        """With the lock held, records queued: while the input is behind, wait (up to
        :attr:`CatchUp.wait_s`) for a batch of :attr:`CatchUp.batch_records`."""
        rule = self.catch_up
        if rule is None:
            return
        deadline = time.monotonic() + rule.wait_s
        while (
            self._input_behind
            and len(self._queued) < rule.batch_records
            and not (self._closed or self._dropping or self._waiters)
            and (left := deadline - time.monotonic()) > 0
        ):
            self._cond.wait(left)

    def _write_until_done(self, batch: B) -> None:
        while True:
            with self._cond:
                self._retry_now = False
                if self._dropping:
                    self._done(None)
                    return
            try:
                self._write(batch)
            except BaseException as exc:
                self._failed(exc)
                with self._cond:
                    self._failure = exc
                    self._outcomes += 1
                    self._cond.notify_all()
                    if not self._retry_now and not self._dropping:
                        self._cond.wait(self.retry_after)
                continue
            with self._cond:
                self._done(None)
            return

    def _done(self, failure: BaseException | None) -> None:
        """With the lock held: the current batch is written (or dropped)."""
        self._failure = failure
        self._current = None
        self._outcomes += 1
        self._cond.notify_all()
