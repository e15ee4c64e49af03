"""Writing behind the consumer: batches written in order, in a thread of their own.

The sink's consumer thread (Quix's loop) hands each checkpoint's records to a
:class:`WriteBehind` and goes on consuming; its thread writes them. Whatever is handed
over while a write is in flight is gathered and written next, as one batch, so the writes
grow with the input and the lake's fixed cost per commit is paid once per write, not once
per checkpoint. DuckDB does its work outside the GIL, so on two cores consuming and
writing overlap.

Guarantees: batches are written in the order they were handed over, each record once; a
write that fails is kept and tried again (every :attr:`WriteBehind.retry_after` seconds,
or at once when asked) before anything newer; nothing is dropped unless :meth:`drop`
says so. The records handed over but not yet written are bounded (:attr:`limit`): past
it :meth:`put` waits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("pipelines.sink")


class Gathering(Protocol):
    """Records gathered for one write: they can take another batch's in after them."""

    def __len__(self) -> int: ...

    def absorb(self, other: Gathering) -> None: ...


B = TypeVar("B", bound=Gathering)


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
        name: str = "write-behind",
    ) -> None:
        self._write = write
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
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, batch: B) -> None:
        """Queue ``batch`` after everything before it; wait while more than
        :attr:`limit` records are queued. If a write failed, it is tried again first,
        and ``batch`` is not queued if that fails too (the caller gets the same records
        again later)."""
        with self._cond:
            self._check()
            while len(self._queued) >= self.limit:
                self._cond.wait()
                self._check()
            if len(batch):
                self._queued.absorb(batch)
                self._cond.notify_all()

    def wait(self) -> None:
        """Wait until everything handed over is written (raises as :meth:`put`)."""
        with self._cond:
            self._check()
            while len(self._queued) or self._current is not None:
                self._cond.wait()
                self._check()

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
                batch, self._queued = self._queued, self._empty()
                self._current = batch
            self._write_until_done(batch)

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
