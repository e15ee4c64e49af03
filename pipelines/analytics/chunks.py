"""Which named state chunks an engine changed since its last checkpoint.

Both engines (:mod:`pipelines.analytics.local`, :mod:`pipelines.analytics.combine`)
keep their state as plain dicts and persist it as named JSON chunks once per
checkpoint (:mod:`pipelines.analytics.persistence`). This tracks the names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ChunkChanges:
    """Chunks touched or removed since the last :meth:`take`.

    A chunk removed and then touched again in the same checkpoint is an upsert,
    not a deletion.
    """

    __slots__ = ("deleted", "dirty")

    def __init__(self) -> None:
        self.dirty: set[str] = set()
        self.deleted: set[str] = set()

    def touch(self, name: str) -> None:
        self.dirty.add(name)

    def remove(self, name: str) -> None:
        self.dirty.discard(name)
        self.deleted.add(name)

    def take(self, render: Callable[[str], Any]) -> tuple[dict[str, Any], set[str]]:
        """``(name -> rendered value for changed chunks, removed names)``; then start over."""
        upserts = {name: render(name) for name in self.dirty}
        deleted = self.deleted - self.dirty
        self.dirty = set()
        self.deleted = set()
        return upserts, deleted
