"""Stage 1: per input partition, slice events into panes and decide what is late.

One :class:`PartitionAggregator` per input partition sees, in arrival order, the
orders, returns, stock questions, stock events and ticks of that partition (all
input topics are keyed by ``store_id`` and co-partitioned, so a store's events and
its stock log meet here). It

* keeps a watermark per input topic: the highest event time seen there, raised by
  ticks (:mod:`~pipelines.analytics.ticker`: an idle input follows its partition,
  an idle partition follows the others);
* counts an event into its 1-minute pane, or - if the pane ended more than
  ``grace_ms`` before the event's own topic watermark - emits it as a ``late``
  record with the reason, never dropping it silently;
* closes panes per *family* (sales: orders; returns: returns; demand: questions
  and stock events) once every input of the family is past the pane end plus
  grace, and emits one ``digest`` per step with the closed panes' partial sums
  and how far the family is final (``through``), even when no pane had data, so
  the combiner can tell "nothing happened" from "not known yet";
* answers "was this SKU out of stock in this store when the question was asked"
  from the stock event log as of the question's event time, when the pane closes
  (by then no stock event of that time can still arrive on time).

Guarantees: an event is counted at most once and only into an open pane; a pane
is closed once; a digest covers the panes in ``(after, through]`` and nothing
else. Lateness depends only on the order records arrive within their own
topic-partition and on the ticks, never on how the consumer interleaves topics,
so replaying a partition gives the same digests. The aggregator is plain Python
with no I/O: the Quix wiring (:mod:`pipelines.analytics.app`) feeds it and
persists its chunks.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.records import (
    INPUT_KINDS,
    Coordinates,
    InputKind,
    Output,
    UnreadableEvent,
    parse_time_ms,
    to_cents,
)
from pipelines.checkpointed import ChunkChanges

Family = str
FAMILIES: tuple[Family, ...] = ("sales", "returns", "demand")
FAMILY_OF: dict[InputKind, Family] = {
    "orders": "sales",
    "returns": "returns",
    "questions": "demand",
    "stock": "demand",
}
FAMILY_INPUTS: dict[Family, tuple[InputKind, ...]] = {
    "sales": ("orders",),
    "returns": ("returns",),
    "demand": ("questions", "stock"),
}
DIGEST_KEY = "all"
"""Every digest carries this key, so all of them meet in one combiner partition."""

NEG_INF = -(1 << 62)
"""'Nothing seen yet' for watermarks: below any event time, still an int."""
_KNOWN = NEG_INF // 2

StockFact = tuple[str, int]
"""(sku, stock level after the event) in the event's store."""
History = list[list[int]]
"""One store's SKU level history: sorted ``[event_time, offset, level]`` entries."""


# --- reading the input events (fields only; the router validated them) -----------


def _order_facts(value: dict[str, Any]) -> tuple[str, str, list[tuple[str, int, int]]]:
    lines = [
        (line["sku"], int(line["qty"]), to_cents(line["unit_price"]))
        for line in value["payload"]["lines"]
    ]
    if not lines:
        raise UnreadableEvent("order without lines")
    return value["channel"], value["store_id"], lines


def _return_facts(value: dict[str, Any]) -> tuple[str, int, int]:
    payload = value["payload"]
    return payload["sku"], int(payload["qty"]), to_cents(payload["amount"])


def _question_facts(value: dict[str, Any]) -> str:
    payload = value["payload"]
    # The store the customer asks about (its stock log shares the partition: the
    # question is keyed by that store).
    return f"{payload['store_id']}|{payload['sku']}"


def stock_facts(value: dict[str, Any]) -> tuple[str, list[StockFact]]:
    """The store and the SKU levels a stock event states (none for other event types)."""
    store = value["store_id"]
    payload = value.get("payload") or {}
    kind = value.get("event_type")
    if kind == "StockReserved":
        return store, [(m["sku"], int(m["level_after"])) for m in payload["movements"]]
    if kind in ("StockReleased", "StockReplenished"):
        movement = payload["movement"]
        return store, [(movement["sku"], int(movement["level_after"]))]
    if kind == "StockRejected":
        # A rejection states how many units were available at that moment.
        return store, [(s["sku"], int(s["available"])) for s in payload["shortages"]]
    return store, []


def level_at(history: History | None, time_ms: int) -> int | None:
    """The stock level as of ``time_ms``: the entry with the highest (time, offset) at or
    before it; ``None`` when the log says nothing about that SKU before then."""
    if not history:
        return None
    i = bisect_right(history, time_ms, key=_entry_time)
    return history[i - 1][2] if i else None


def _entry_time(entry: list[int]) -> int:
    return entry[0]


def _entry_order(entry: list[int]) -> tuple[int, int]:
    return entry[0], entry[1]


def _add(rows: dict[str, list[int]], key: str, values: tuple[int, ...]) -> None:
    row = rows.get(key)
    if row is None:
        rows[key] = list(values)
    else:
        for i, v in enumerate(values):
            row[i] += v


class PartitionAggregator:
    """Stage-1 state and rules of one input partition (see the module docstring).

    Call :meth:`on_event` for each input record and :meth:`on_tick` for each tick,
    in arrival order; forward what they return. :meth:`take_changes` and
    :meth:`restore` persist and rebuild it as named JSON chunks.
    """

    def __init__(self, partition: int, config: AnalyticsConfig) -> None:
        self.partition = partition
        self.config = config
        self._own: dict[str, int] = dict.fromkeys(INPUT_KINDS, NEG_INF)
        self._clock = NEG_INF
        self._tick: dict[str, int] = dict.fromkeys(INPUT_KINDS, NEG_INF)
        self._closed: dict[Family, int] = dict.fromkeys(FAMILIES, NEG_INF)
        self._due = NEG_INF
        """Lowest watermark at which some family may close a pane (see :meth:`_advance`)."""
        self._panes: dict[Family, dict[int, dict[str, Any]]] = {f: {} for f in FAMILIES}
        self._stock: dict[str, dict[str, History]] = {}
        self._stats: dict[str, int] = {"events": 0, "late": 0, "unreadable": 0, "ticks": 0}
        self._changes = ChunkChanges()
        self._readers: dict[InputKind, Callable[[dict[str, Any]], Any]] = {
            "orders": _order_facts,
            "returns": _return_facts,
            "questions": _question_facts,
            "stock": stock_facts,
        }

    # --- inputs ---------------------------------------------------------------------

    def on_event(self, kind: InputKind, value: Any, where: Coordinates) -> list[Output]:
        """Count one input event (or keep it as late/unreadable); return what to emit."""
        try:
            time_ms = parse_time_ms(value["occurred_at"])
            facts = self._readers[kind](value)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return [self._unreadable(kind, value, where, exc)]
        self._stats["events"] += 1
        pane_ms = self.config.pane_ms
        pane = time_ms - time_ms % pane_ms
        watermark = self.watermark(kind)
        out: list[Output] = []
        if pane + pane_ms + self.config.grace_ms <= watermark:
            out.append(self._late(kind, value, where, time_ms, pane, watermark))
        else:
            self._count(kind, facts, pane, time_ms, where.offset)
        # Time moves with every event, late or not: lateness is judged on arrival order.
        if time_ms > self._own[kind]:
            self._own[kind] = time_ms
            if time_ms > self._clock:
                self._clock = time_ms
        self._changes.touch("meta")
        # Only this input's watermark moved: below the earliest due pane boundary
        # nothing can close, which is the case for almost every event.
        if self._own[kind] >= self._due:
            out.extend(self._advance())
        return out

    def on_tick(
        self, watermark_ms: int | None, inputs: Iterable[InputKind] | None = None
    ) -> list[Output]:
        """Raise the watermark of ``inputs`` (default: all) to ``watermark_ms``.

        ``None`` is a probe: nothing changes (the caller reports the clock).
        """
        self._stats["ticks"] += 1
        self._changes.touch("meta")
        if watermark_ms is None:
            return []
        moved = False
        for kind in INPUT_KINDS if inputs is None else inputs:
            if kind in self._tick and watermark_ms > self._tick[kind]:
                self._tick[kind] = int(watermark_ms)
                moved = True
        return self._advance() if moved and watermark_ms >= self._due else []

    # --- watermarks -----------------------------------------------------------------

    def watermark(self, kind: InputKind) -> int:
        """Event time up to which input ``kind`` of this partition is considered complete."""
        own, tick = self._own[kind], self._tick[kind]
        return own if own > tick else tick

    @property
    def event_time_ms(self) -> int | None:
        """Latest event time seen on any input of the partition, ``None`` before any.

        Ticks are left out on purpose: the ticker extrapolates from this, and a tick
        it sent must not become the base of the next one.
        """
        return self._clock if self._clock > _KNOWN else None

    @property
    def stats(self) -> Mapping[str, int]:
        return self._stats

    def closed_through(self, family: Family) -> int | None:
        closed = self._closed[family]
        return closed if closed > _KNOWN else None

    # --- counting -------------------------------------------------------------------

    def _pane(self, family: Family, pane: int, empty: Callable[[], dict[str, Any]]) -> Any:
        panes = self._panes[family]
        partial = panes.get(pane)
        if partial is None:
            partial = panes[pane] = empty()
        self._changes.touch(f"pane/{family}/{pane}")
        return partial

    def _count(self, kind: InputKind, facts: Any, pane: int, time_ms: int, offset: int) -> None:
        if kind == "orders":
            channel, store, lines = facts
            partial = self._pane("sales", pane, lambda: {"c": {}, "s": {}, "k": {}})
            units = cents = 0
            skus = partial["k"]
            for sku, qty, unit_cents in lines:
                units += qty
                cents += qty * unit_cents
                _add(skus, sku, (qty, qty * unit_cents))
            _add(partial["c"], channel, (1, units, cents))
            _add(partial["s"], store, (1, units, cents))
        elif kind == "returns":
            sku, qty, cents = facts
            partial = self._pane("returns", pane, lambda: {"k": {}})
            _add(partial["k"], sku, (1, qty, cents))
        elif kind == "questions":
            partial = self._pane("demand", pane, lambda: {"q": {}})
            partial["q"].setdefault(facts, []).append(time_ms)
        else:
            store, levels = facts
            self._record_stock(store, levels, time_ms, offset)

    def _record_stock(self, store: str, facts: list[StockFact], time_ms: int, offset: int) -> None:
        if not facts:
            return
        skus = self._stock.setdefault(store, {})
        keep_from = self._closed["demand"]
        for sku, level in facts:
            history = skus.setdefault(sku, [])
            insort(history, [time_ms, offset, level], key=_entry_order)
            # Questions still to be resolved are at or after the demand family's closed
            # boundary: of the older entries only the latest can still answer one.
            cut = bisect_left(history, keep_from, key=_entry_time)
            if cut > 1:
                del history[: cut - 1]
        self._changes.touch(f"stock/{store}")

    # --- closing --------------------------------------------------------------------

    def _advance(self) -> list[Output]:
        out: list[Output] = []
        pane_ms, grace = self.config.pane_ms, self.config.grace_ms
        for family in FAMILIES:
            mark = min(self.watermark(kind) for kind in FAMILY_INPUTS[family])
            if mark <= _KNOWN:
                continue
            edge = mark - grace
            through = edge - edge % pane_ms
            if through > self._closed[family]:
                out.append(self._close(family, through))
        self._update_due()
        return out

    def _update_due(self) -> None:
        # A family that has closed before closes again once its watermark reaches its
        # next pane boundary plus grace; one that never closed must be checked always.
        step = self.config.pane_ms + self.config.grace_ms
        self._due = min(
            (closed + step if closed > _KNOWN else NEG_INF) for closed in self._closed.values()
        )

    def _close(self, family: Family, through: int) -> Output:
        pane_ms = self.config.pane_ms
        panes = self._panes[family]
        closing = sorted(start for start in panes if start + pane_ms <= through)
        digest_panes: dict[str, Any] = {}
        for start in closing:
            partial = panes.pop(start)
            name = f"pane/{family}/{start}"
            self._changes.remove(name)
            digest_panes[str(start)] = (
                self._resolve_questions(partial) if family == "demand" else partial
            )
        after = self._closed[family]
        self._closed[family] = through
        self._changes.touch("meta")
        digest = {
            "family": family,
            "source": self.partition,
            "after": after if after > _KNOWN else None,
            "through": through,
            "panes": digest_panes,
        }
        return Output("digest", DIGEST_KEY, digest, through)

    def _resolve_questions(self, partial: dict[str, Any]) -> dict[str, Any]:
        per_sku: dict[str, list[int]] = {}
        out_of_stock: dict[str, int] = {}
        for store_sku, times in partial["q"].items():
            store, sku = store_sku.split("|", 1)
            history = self._stock.get(store, {}).get(sku)
            oos = sum(1 for t in times if level_at(history, t) == 0)
            _add(per_sku, sku, (len(times), oos))
            if oos:
                out_of_stock[store_sku] = [oos]
        return {"k": per_sku, "o": out_of_stock}

    # --- kept, not counted ------------------------------------------------------------

    def _late(
        self,
        kind: InputKind,
        value: dict[str, Any],
        where: Coordinates,
        time_ms: int,
        pane: int,
        watermark: int,
    ) -> Output:
        self._stats["late"] += 1
        pane_end = pane + self.config.pane_ms
        deadline = pane_end + self.config.grace_ms
        record = {
            "reason": "beyond_grace",
            "detail": (
                f"{kind} event for window ending {pane_end} arrived when {where.topic}"
                f"[{where.partition}] was already at {watermark}, "
                f"{watermark - deadline} ms past the {self.config.grace_ms} ms grace"
            ),
            "input": kind,
            "topic": where.topic,
            "partition": where.partition,
            "offset": where.offset,
            "event_id": value.get("event_id"),
            "event_type": value.get("event_type"),
            "store_id": value.get("store_id"),
            "event_time": time_ms,
            "window_start": pane,
            "window_end": pane_end,
            "watermark": watermark,
            "grace_ms": self.config.grace_ms,
            "late_by_ms": watermark - deadline,
            "event": value,
        }
        return Output("late", str(value.get("store_id") or ""), record, time_ms)

    def _unreadable(
        self, kind: InputKind, value: Any, where: Coordinates, exc: Exception
    ) -> Output:
        self._stats["unreadable"] += 1
        store = value.get("store_id") if isinstance(value, dict) else None
        record = {
            "reason": "unreadable",
            "detail": f"{type(exc).__name__}: {exc} in {kind} record at {where}",
            "input": kind,
            "topic": where.topic,
            "partition": where.partition,
            "offset": where.offset,
            "event_id": value.get("event_id") if isinstance(value, dict) else None,
            "event_type": value.get("event_type") if isinstance(value, dict) else None,
            "store_id": store,
            "event": value,
        }
        return Output("late", str(store or ""), record, max(self._clock, 0))

    # --- persistence as named chunks --------------------------------------------------

    def take_changes(self) -> tuple[dict[str, Any], set[str]]:
        """Chunks changed since the last call (name -> JSON value) and chunks removed."""
        return self._changes.take(self._chunk)

    def chunk_names(self) -> list[str]:
        """Every chunk that :meth:`restore` needs."""
        names = ["meta"]
        names += [f"pane/{f}/{start}" for f in FAMILIES for start in self._panes[f]]
        names += [f"stock/{store}" for store in self._stock]
        return names

    def _chunk(self, name: str) -> Any:
        if name == "meta":
            return {
                "own": {k: _opt(v) for k, v in self._own.items()},
                "clock": _opt(self._clock),
                "tick": {k: _opt(v) for k, v in self._tick.items()},
                "closed": {f: _opt(v) for f, v in self._closed.items()},
                "stats": dict(self._stats),
            }
        section, _, rest = name.partition("/")
        if section == "pane":
            family, _, start = rest.partition("/")
            return self._panes[family][int(start)]
        return self._stock[rest]

    @classmethod
    def restore(cls, partition: int, config: AnalyticsConfig, chunks: Mapping[str, Any]) -> Self:
        """Rebuild from chunks written by :meth:`take_changes` (missing meta: fresh)."""
        agg = cls(partition, config)
        meta = chunks.get("meta")
        if meta is None:
            return agg
        agg._own = {k: _unopt(meta["own"].get(k)) for k in INPUT_KINDS}
        agg._clock = _unopt(meta["clock"])
        agg._tick = {k: _unopt(meta["tick"].get(k)) for k in INPUT_KINDS}
        agg._closed = {f: _unopt(meta["closed"].get(f)) for f in FAMILIES}
        agg._stats.update(meta.get("stats", {}))
        agg._update_due()
        for name, value in chunks.items():
            section, _, rest = name.partition("/")
            if section == "pane":
                family, _, start = rest.partition("/")
                agg._panes[family][int(start)] = value
            elif section == "stock":
                agg._stock[rest] = value
        return agg


def _opt(value: int) -> int | None:
    return value if value > _KNOWN else None


def _unopt(value: int | None) -> int:
    return NEG_INF if value is None else int(value)
