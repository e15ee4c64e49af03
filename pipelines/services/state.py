"""The key-value state the business rules read and write, and two plain implementations.

Rules take a :class:`KeyValueState` - the subset of Quix Streams' ``State`` they use - so
they run unchanged on a Quix state store (one per message key, changelog-backed) and on a
:class:`MemoryState` in unit tests. :class:`StagedState` buffers writes so that a rule
that raises half-way leaves the real store untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Protocol

from shopstream.events import Envelope, decode_or_raise, encode

_MISSING = object()

Key = str | bytes
"""State keys: text for the services' readable keys, bytes where speed matters (router)."""


class KeyValueState(Protocol):
    """Per-key state: what ``quixstreams.State`` offers and the rules rely on.

    ``ttl`` is event-time based (Quix Streams stamps the current record's timestamp);
    an expired entry reads as absent.
    """

    def get(self, key: Key, default: Any = None) -> Any: ...

    def set(self, key: Key, value: Any, ttl: timedelta | None = None) -> None: ...

    def exists(self, key: Key) -> bool: ...

    def delete(self, key: Key) -> None: ...


def first_time(state: KeyValueState, marker: Key, ttl: timedelta | None = None) -> bool:
    """``True`` and set ``marker`` if it is not in ``state`` yet; ``False`` if it is.

    How every service stays idempotent on its causing event: it marks what it handled
    (``return:<id>``, ``sent:<event_id>``...) and does nothing the second time.
    """
    if state.exists(marker):
        return False
    state.set(marker, 1, ttl=ttl)
    return True


def hold(state: KeyValueState, key: Key, event: Envelope) -> bool:
    """Park ``event`` under ``key`` until what it waits for arrives; ``False`` if it was
    already parked there (a redelivery), so holding is idempotent on the event id.

    Why: the inputs of a service come on several topics and each topic's consumer runs at
    its own pace, so an event can arrive before the one it refers to (a return before its
    order) - and deciding it then, on what is not known *yet*, would decide it wrong for good.
    """
    held: dict[str, str] = state.get(key, {})
    event_id = str(event.event_id)
    if event_id in held:
        return False
    state.set(key, {**held, event_id: encode(event).decode()})
    return True


def take_held(state: KeyValueState, key: Key) -> list[Envelope]:
    """The events parked under ``key``, in the order they were held; the key is cleared."""
    held: dict[str, str] = state.get(key, {})
    state.delete(key)
    return [decode_or_raise(raw.encode()) for raw in held.values()]


class MemoryState:
    """A dict-backed :class:`KeyValueState` with event-time TTL, for tests and folds.

    ``now_ms`` plays the role of the current record's timestamp: set it before each call
    to exercise expiry the way a Quix store would see it.
    """

    def __init__(self, now_ms: int = 0) -> None:
        self.now_ms = now_ms
        self._data: dict[Key, tuple[Any, int | None]] = {}

    def get(self, key: Key, default: Any = None) -> Any:
        item = self._data.get(key)
        if item is None or self._expired(item[1]):
            return default
        return item[0]

    def set(self, key: Key, value: Any, ttl: timedelta | None = None) -> None:
        expires = None if ttl is None else self.now_ms + int(ttl.total_seconds() * 1000)
        self._data[key] = (value, expires)

    def exists(self, key: Key) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def delete(self, key: Key) -> None:
        self._data.pop(key, None)

    def live_keys(self) -> Iterator[Key]:
        """Live (unexpired) keys, for assertions."""
        return (k for k, (_, exp) in self._data.items() if not self._expired(exp))

    def _expired(self, expires: int | None) -> bool:
        return expires is not None and expires <= self.now_ms


class StagedState:
    """Reads through to ``inner``, buffers writes until :meth:`commit`.

    Why: a rule that fails after some writes must leave no trace, so the record can be
    dead-lettered and the stream go on with the store exactly as it was.
    """

    __slots__ = ("_deleted", "_inner", "_writes")

    def __init__(self, inner: KeyValueState) -> None:
        self._inner = inner
        self._writes: dict[Key, tuple[Any, timedelta | None]] = {}
        self._deleted: set[Key] = set()

    def get(self, key: Key, default: Any = None) -> Any:
        if key in self._writes:
            return self._writes[key][0]
        if key in self._deleted:
            return default
        return self._inner.get(key, default)

    def set(self, key: Key, value: Any, ttl: timedelta | None = None) -> None:
        self._deleted.discard(key)
        self._writes[key] = (value, ttl)

    def exists(self, key: Key) -> bool:
        if key in self._writes:
            return True
        if key in self._deleted:
            return False
        return self._inner.exists(key)

    def delete(self, key: Key) -> None:
        self._writes.pop(key, None)
        self._deleted.add(key)

    def commit(self) -> None:
        """Apply the buffered deletes and writes to ``inner``."""
        for key in self._deleted:
            self._inner.delete(key)
        for key, (value, ttl) in self._writes.items():
            self._inner.set(key, value, ttl=ttl)
        self._writes.clear()
        self._deleted.clear()
