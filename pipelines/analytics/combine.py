"""Stage 2: merge the partitions' pane digests into final windows and alerts.

Every stage-1 digest goes to one combiner (the digests share one key). For each
family (sales, returns, demand) the combiner knows, per source partition, up to
which pane boundary that partition is final; the family is final up to the
*lowest* of those, and only then are its windows emitted - each exactly once, in
event-time order, with the sum over all partitions. So a window is final when
every partition has closed it, not when the first one has.

Outputs, all in event time (window ends):

* ``sales_by_channel`` / ``sales_by_store``: per 1-minute pane with orders, the
  orders, units, revenue and average basket.
* ``top_skus``: for every pane end, the 15-minute window ending there (hopping by
  one pane), its ``top_n`` SKUs by units (ties: revenue, then SKU id).
* ``returns``: per pane, per SKU and per category with returns: count, units,
  refunded amount, and the return rate = returned / sold units over the trailing
  ``returns_trailing_ms`` (``None`` when nothing was sold).
* ``demand``: per pane and SKU with stock questions: questions, and how many were
  about a SKU out of stock in the asked store at the time.
* ``alert``: a channel silent while its traffic curve expects orders, a
  category's return rate spiking over its long-run rate, questions piling up on a
  SKU out of stock in one store. Each fires once per episode and re-arms when
  the condition clears.

Longer windows are sums of panes kept in running totals (add the pane that
enters, subtract the one that leaves), so a window costs one pane update.
Idempotent: a digest, or the part of it, already merged is skipped, so a stage-1
replay under at-least-once does not double-count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

from pipelines.analytics.alerts import alert_event
from pipelines.analytics.catalog import CategoryOf, TrafficCurve, category_lookup, flat_curve
from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.local import _KNOWN, FAMILIES, NEG_INF, Family
from pipelines.analytics.records import Output, euros
from pipelines.checkpointed import ChunkChanges

Rows = Mapping[str, list[int]]


def _add_rows(target: dict[str, list[int]], rows: Rows, sign: int = 1) -> None:
    for key, values in rows.items():
        row = target.get(key)
        if row is None:
            target[key] = [sign * v for v in values]
        else:
            for i, v in enumerate(values):
                row[i] += sign * v


def _merge(target: dict[str, Any], partial: Mapping[str, Any]) -> None:
    for section, rows in partial.items():
        _add_rows(target.setdefault(section, {}), rows)


class _Sliding:
    """Running per-key sums over the panes of a sliding window.

    ``rows_of(start)`` must give the same rows when a pane leaves as when it
    entered (panes are final by then), so totals stay exact integers.
    """

    __slots__ = ("rows_of", "span", "starts", "sums")

    def __init__(self, span: int, rows_of: Callable[[int], Rows]) -> None:
        self.span = span
        self.rows_of = rows_of
        self.starts: deque[int] = deque()
        self.sums: dict[str, list[int]] = {}

    def enter(self, start: int) -> None:
        rows = self.rows_of(start)
        if rows:
            self.starts.append(start)
            _add_rows(self.sums, rows)

    def leave_before(self, edge: int) -> Iterator[Rows]:
        """Remove the panes starting before ``edge``; yield the rows each one took away."""
        sums = self.sums
        while self.starts and self.starts[0] < edge:
            rows = self.rows_of(self.starts.popleft())
            for key, values in rows.items():
                row = sums[key]
                for i, v in enumerate(values):
                    row[i] -= v
                if not any(row):
                    del sums[key]
            yield rows


class GlobalCombiner:
    """Stage-2 state and rules (see the module docstring).

    Call :meth:`on_digest` for each digest in arrival order and forward what it
    returns. ``sources`` is the number of input partitions: nothing is final until
    each of them has reported.
    """

    def __init__(
        self,
        config: AnalyticsConfig,
        sources: int,
        category_of: CategoryOf | None = None,
        curve: TrafficCurve = flat_curve,
    ) -> None:
        if sources <= 0:
            raise ValueError("sources must be positive")
        self.config = config
        self.sources = sources
        self.category_of = category_of or category_lookup({})
        self.curve = curve
        self._closed: dict[Family, dict[int, int]] = {f: {} for f in FAMILIES}
        self._panes: dict[Family, dict[int, dict[str, Any]]] = {f: {} for f in FAMILIES}
        self._pointer: dict[str, int] = {"sales": NEG_INF, "returns": NEG_INF, "demand": NEG_INF}
        self._silence: dict[str, dict[str, Any]] = {}
        self._spiking: set[str] = set()
        self._history: dict[str, list[int]] = {}
        """Per category, [returned, sold] units of every pane that left the trailing window."""
        self._oos_alerted: set[str] = set()
        self._stats: dict[str, int] = {"digests": 0, "duplicates": 0, "alerts": 0}
        self._changes = ChunkChanges()
        sales, demand = self._panes["sales"], self._panes["demand"]
        self._top = _Sliding(config.top_window_ms, lambda s: sales[s]["k"] if s in sales else {})
        self._trail = _Sliding(config.returns_trailing_ms, self._trail_rows)
        self._oos = _Sliding(config.oos_window_ms, lambda s: demand[s].get("o", {}))

    # --- input ----------------------------------------------------------------------

    def on_digest(self, digest: Mapping[str, Any]) -> list[Output]:
        """Merge one digest; emit every window and alert that became final."""
        family: Family = digest["family"]
        source = int(digest["source"])
        through = int(digest["through"])
        closed = self._closed[family]
        known = closed.get(source, NEG_INF)
        self._changes.touch("meta")
        if through <= known:
            self._stats["duplicates"] += 1
            return []
        self._stats["digests"] += 1
        panes = self._panes[family]
        for start_text, partial in digest["panes"].items():
            start = int(start_text)
            if start < known:  # merged already, from an earlier copy of this digest
                continue
            _merge(panes.setdefault(start, {}), partial)
            self._changes.touch(f"pane/{family}/{start}")
        closed[source] = through
        return self._emit()

    def final_through(self, family: Family) -> int | None:
        """Pane boundary up to which ``family`` is final in every source partition."""
        closed = self._closed[family]
        sources = set(range(self.sources)) | closed.keys()
        through = min(closed.get(s, NEG_INF) for s in sources)
        return through if through > _KNOWN else None

    @property
    def stats(self) -> Mapping[str, int]:
        return self._stats

    # --- emission -------------------------------------------------------------------

    def _emit(self) -> list[Output]:
        out: list[Output] = []
        sales = self.final_through("sales")
        returns = self.final_through("returns")
        demand = self.final_through("demand")
        if sales is not None:
            out += self._emit_sales(sales)
            if returns is not None:
                out += self._emit_returns(min(sales, returns))
        if demand is not None:
            out += self._emit_demand(demand)
        self._prune()
        return out

    def _start(self, name: str, families: tuple[Family, ...], through: int) -> int:
        pointer = self._pointer[name]
        if pointer > _KNOWN:
            return pointer
        starts = [s for f in families for s in self._panes[f]]
        return min(starts, default=through)

    def _next_start(self, families: tuple[Family, ...], at: int, through: int) -> int:
        later = [s for f in families for s in self._panes[f] if s >= at]
        return min(min(later, default=through), through)

    def _emit_sales(self, through: int) -> list[Output]:
        out: list[Output] = []
        pane_ms, top_ms = self.config.pane_ms, self.config.top_window_ms
        panes = self._panes["sales"]
        m = self._start("sales", ("sales",), through)
        while m + pane_ms <= through:
            end = m + pane_ms
            pane = panes.get(m)
            if pane is not None:
                out += self._sales_rows(m, end, pane)
                self._top.enter(m)
            for _ in self._top.leave_before(end - top_ms):
                pass
            if self._top.sums:
                out += self._top_rows(end - top_ms, end)
            out += self._silence_step(m, end, pane)
            m = end
            if not self._top.sums and not self._silence_pending(m):
                m = self._next_start(("sales",), m, through)
        if m > self._pointer["sales"]:
            self._pointer["sales"] = m
        return out

    def _sales_rows(self, start: int, end: int, pane: Mapping[str, Any]) -> list[Output]:
        out = []
        for role, field, section in (
            ("sales_by_channel", "channel", "c"),
            ("sales_by_store", "store_id", "s"),
        ):
            for key, (orders, units, cents) in sorted(pane.get(section, {}).items()):
                record = {
                    "window_start": start,
                    "window_end": end,
                    field: key,
                    "orders": orders,
                    "units": units,
                    "revenue": euros(cents),
                    "avg_basket": cents / orders / 100,
                }
                out.append(Output(role, key, record, end))  # type: ignore[arg-type]
        return out

    def _top_rows(self, start: int, end: int) -> list[Output]:
        ranked = sorted(self._top.sums.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
        if self.config.top_n is not None:
            ranked = ranked[: self.config.top_n]
        return [
            Output(
                "top_skus",
                sku,
                {
                    "window_start": start,
                    "window_end": end,
                    "sku": sku,
                    "category": self.category_of(sku),
                    "units": units,
                    "revenue": euros(cents),
                    "rank": rank,
                },
                end,
            )
            for rank, (sku, (units, cents)) in enumerate(ranked, start=1)
        ]

    # --- silence --------------------------------------------------------------------

    def _silence_step(self, m: int, end: int, pane: Mapping[str, Any] | None) -> list[Output]:
        cfg = self.config
        out: list[Output] = []
        for channel, row in (pane or {}).get("c", {}).items():
            if row[0] > 0:
                self._silence[channel] = {
                    "last": end,
                    "scale": None,
                    "curve": 0.0,
                    "alerted": False,
                }
        for channel, st in sorted(self._silence.items()):
            last = st["last"]
            silent = end - last
            if silent <= 0 or st["alerted"] or silent > cfg.silence_max_ms:
                continue
            if st["scale"] is None:
                st["scale"] = self._silence_scale(channel, last)
            if st["scale"] <= 0:
                continue
            st["curve"] += self.curve(channel, m)
            expected = st["scale"] * st["curve"]
            if silent >= cfg.silence_ms and expected >= cfg.silence_min_expected:
                st["alerted"] = True
                self._stats["alerts"] += 1
                minutes = silent // 60_000
                out.append(
                    Output(
                        "alert",
                        "all",
                        alert_event(
                            "channel_silent",
                            channel,
                            end,
                            f"no {channel} orders for {minutes} min while the traffic "
                            f"curve expected {expected:.1f}",
                            {
                                "channel": channel,
                                "silent_since": last,
                                "silent_ms": silent,
                                "expected_orders": round(expected, 2),
                            },
                        ),
                        end,
                    )
                )
        return out

    def _silence_scale(self, channel: str, last: int) -> float:
        """Orders per unit of curve over the baseline window that ends at ``last``."""
        pane_ms = self.config.pane_ms
        panes = self._panes["sales"]
        orders = 0
        weight = 0.0
        for start in range(last - self.config.silence_baseline_ms, last, pane_ms):
            weight += self.curve(channel, start)
            pane = panes.get(start)
            if pane is not None:
                row = pane.get("c", {}).get(channel)
                if row is not None:
                    orders += row[0]
        return orders / weight if weight > 0 else 0.0

    def _silence_pending(self, at: int) -> bool:
        limit = self.config.silence_max_ms
        return any(
            not st["alerted"]
            and at - st["last"] <= limit
            and (st["scale"] is None or st["scale"] > 0)
            for st in self._silence.values()
        )

    # --- returns --------------------------------------------------------------------

    def _trail_rows(self, start: int) -> dict[str, list[int]]:
        """[returned units, sold units] per SKU and per ``#category`` in one pane."""
        rows: dict[str, list[int]] = {}
        category_of = self.category_of
        sales = self._panes["sales"].get(start)
        if sales is not None:
            for sku, (units, _cents) in sales.get("k", {}).items():
                _add_rows(rows, {sku: [0, units], "#" + category_of(sku): [0, units]})
        returns = self._panes["returns"].get(start)
        if returns is not None:
            for sku, (_count, units, _cents) in returns.get("k", {}).items():
                _add_rows(rows, {sku: [units, 0], "#" + category_of(sku): [units, 0]})
        return rows

    def _emit_returns(self, through: int) -> list[Output]:
        out: list[Output] = []
        cfg = self.config
        pane_ms = cfg.pane_ms
        both = ("sales", "returns")
        m = self._start("returns", both, through)
        while m + pane_ms <= through:
            end = m + pane_ms
            self._trail.enter(m)
            for rows in self._trail.leave_before(end - cfg.returns_trailing_ms):
                _add_rows(self._history, {k[1:]: v for k, v in rows.items() if k.startswith("#")})
                self._changes.touch("meta")
            pane = self._panes["returns"].get(m)
            if pane is not None:
                out += self._returns_rows(m, end, pane)
            out += self._spike_step(end)
            m = end
            if not self._trail.sums:
                m = self._next_start(both, m, through)
        if m > self._pointer["returns"]:
            self._pointer["returns"] = m
        return out

    def _returns_rows(self, start: int, end: int, pane: Mapping[str, Any]) -> list[Output]:
        by_category: dict[str, list[int]] = {}
        skus = sorted(pane.get("k", {}).items())
        for sku, row in skus:
            _add_rows(by_category, {self.category_of(sku): row})
        out = []
        trailing = self._trail.sums
        categories = sorted(by_category.items())
        for dimension, rows, prefix in (("sku", skus, ""), ("category", categories, "#")):
            for key, (count, units, cents) in rows:
                returned, sold = trailing.get(prefix + key, (0, 0))
                record = {
                    "window_start": start,
                    "window_end": end,
                    "dimension": dimension,
                    "key": key,
                    "category": key if dimension == "category" else self.category_of(key),
                    "returns": count,
                    "units": units,
                    "refunded": euros(cents),
                    "trailing_ms": self.config.returns_trailing_ms,
                    "trailing_returned_units": returned,
                    "trailing_sold_units": sold,
                    "return_rate": returned / sold if sold else None,
                }
                out.append(Output("returns", key, record, end))
        return out

    def _spike_step(self, end: int) -> list[Output]:
        cfg = self.config
        out: list[Output] = []
        categories = {k[1:] for k in self._trail.sums if k.startswith("#")} | self._spiking
        for category in sorted(categories):
            returned, sold = self._trail.sums.get("#" + category, (0, 0))
            past_returned, past_sold = self._history.get(category, (0, 0))
            spiking = False
            rate = baseline = 0.0
            if returned >= cfg.spike_min_units and past_sold >= cfg.spike_min_history_units:
                # A category that never had a return still needs a floor to compare with.
                baseline = max(past_returned, 1) / past_sold
                rate = returned / max(sold, 1)
                spiking = rate >= cfg.spike_factor * baseline
            if spiking and category not in self._spiking:
                self._spiking.add(category)
                self._stats["alerts"] += 1
                out.append(
                    Output(
                        "alert",
                        "all",
                        alert_event(
                            "return_rate_spike",
                            category,
                            end,
                            f"{category} return rate {rate:.1%} over the last "
                            f"{cfg.returns_trailing_ms // 60_000} min vs {baseline:.1%} long-run",
                            {
                                "category": category,
                                "return_rate": round(rate, 4),
                                "baseline_rate": round(baseline, 4),
                                "returned_units": returned,
                                "sold_units": sold,
                            },
                        ),
                        end,
                    )
                )
            elif not spiking and category in self._spiking:
                self._spiking.discard(category)
        return out

    # --- demand ---------------------------------------------------------------------

    def _emit_demand(self, through: int) -> list[Output]:
        out: list[Output] = []
        cfg = self.config
        pane_ms = cfg.pane_ms
        panes = self._panes["demand"]
        m = self._start("demand", ("demand",), through)
        while m + pane_ms <= through:
            end = m + pane_ms
            pane = panes.get(m)
            if pane is not None:
                self._oos.enter(m)
            for rows in self._oos.leave_before(end - cfg.oos_window_ms):
                for key in rows:
                    if key not in self._oos.sums:
                        self._oos_alerted.discard(key)
            if pane is not None:
                out += self._demand_rows(m, end, pane)
                out += self._oos_alerts(end, pane)
            m = end
            if not self._oos.sums:
                m = self._next_start(("demand",), m, through)
        if m > self._pointer["demand"]:
            self._pointer["demand"] = m
        return out

    def _demand_rows(self, start: int, end: int, pane: Mapping[str, Any]) -> list[Output]:
        return [
            Output(
                "demand",
                sku,
                {
                    "window_start": start,
                    "window_end": end,
                    "sku": sku,
                    "category": self.category_of(sku),
                    "questions": questions,
                    "oos_questions": oos,
                },
                end,
            )
            for sku, (questions, oos) in sorted(pane.get("k", {}).items())
        ]

    def _oos_alerts(self, end: int, pane: Mapping[str, Any]) -> list[Output]:
        cfg = self.config
        out: list[Output] = []
        for store_sku in sorted(pane.get("o", {})):
            count = self._oos.sums.get(store_sku, (0,))[0]
            if count < cfg.oos_threshold or store_sku in self._oos_alerted:
                continue
            self._oos_alerted.add(store_sku)
            self._stats["alerts"] += 1
            store, sku = store_sku.split("|", 1)
            out.append(
                Output(
                    "alert",
                    store,
                    alert_event(
                        "questions_on_out_of_stock",
                        store_sku,
                        end,
                        f"{count} questions in {cfg.oos_window_ms // 60_000} min about "
                        f"{sku}, out of stock in {store}",
                        {"store_id": store, "sku": sku, "questions": count},
                        store_id=store,
                    ),
                    end,
                )
            )
        return out

    # --- housekeeping -----------------------------------------------------------------

    def _prune(self) -> None:
        """Drop panes no output will read again."""
        lookback = self.config.lookback_ms
        pointer = self._pointer
        bounds = {
            "sales": min(pointer["sales"], pointer["returns"]) - lookback,
            "returns": pointer["returns"] - lookback,
            "demand": pointer["demand"] - lookback,
        }
        for family, bound in bounds.items():
            if bound <= _KNOWN:
                continue
            panes = self._panes[family]
            for start in [s for s in panes if s < bound]:
                del panes[start]
                name = f"pane/{family}/{start}"
                self._changes.remove(name)

    # --- persistence as named chunks --------------------------------------------------

    def take_changes(self) -> tuple[dict[str, Any], set[str]]:
        """Chunks changed since the last call (name -> JSON value) and chunks removed."""
        return self._changes.take(self._chunk)

    def chunk_names(self) -> list[str]:
        return ["meta"] + [f"pane/{f}/{s}" for f in FAMILIES for s in self._panes[f]]

    def _chunk(self, name: str) -> Any:
        if name == "meta":
            return {
                "closed": {f: {str(s): t for s, t in c.items()} for f, c in self._closed.items()},
                "pointer": {k: (v if v > _KNOWN else None) for k, v in self._pointer.items()},
                "silence": self._silence,
                "spiking": sorted(self._spiking),
                "history": self._history,
                "oos_alerted": sorted(self._oos_alerted),
                "windows": {
                    "top": list(self._top.starts),
                    "trail": list(self._trail.starts),
                    "oos": list(self._oos.starts),
                },
                "stats": self._stats,
            }
        _, family, start = name.split("/")
        return self._panes[family][int(start)]

    @classmethod
    def restore(
        cls,
        config: AnalyticsConfig,
        sources: int,
        chunks: Mapping[str, Any],
        category_of: CategoryOf | None = None,
        curve: TrafficCurve = flat_curve,
    ) -> Self:
        """Rebuild from chunks written by :meth:`take_changes` (missing meta: fresh)."""
        combiner = cls(config, sources, category_of, curve)
        meta = chunks.get("meta")
        if meta is None:
            return combiner
        for name, value in chunks.items():
            if name.startswith("pane/"):
                _, family, start = name.split("/")
                combiner._panes[family][int(start)] = value
        combiner._closed = {
            f: {int(s): int(t) for s, t in meta["closed"].get(f, {}).items()} for f in FAMILIES
        }
        combiner._pointer = {
            k: (NEG_INF if v is None else int(v)) for k, v in meta["pointer"].items()
        }
        combiner._silence = meta["silence"]
        combiner._spiking = set(meta["spiking"])
        combiner._history = meta["history"]
        combiner._oos_alerted = set(meta["oos_alerted"])
        combiner._stats.update(meta["stats"])
        # Running totals are derived data: re-add the panes each window held.
        for window, starts in (
            (combiner._top, meta["windows"]["top"]),
            (combiner._trail, meta["windows"]["trail"]),
            (combiner._oos, meta["windows"]["oos"]),
        ):
            for start in starts:
                window.enter(start)
        return combiner
