"""The analyst's notebook runs on a real short history, and is committed without outputs.

``notebooks/order_history.ipynb`` must not rot: this test builds a history the honest
way - the simulator's events through the real pipeline - and executes the notebook on
it with nbclient, while ``up`` still runs (a reader never blocks the sink):

1. an embedded broker of its own (``up`` reads the catalog's topics, so no namespace);
2. ``shopstream produce`` sends a fixed-seed history with a few hours of event time
   (``--scale`` thins the traffic so that returns, which come 15 minutes to 3 days after
   their order, show up), starting two days back so it crosses midnight and stays well
   inside the topics' retention;
3. ``shopstream up --broker ... --without producer`` runs the router, the services, the
   analytics and the sink until the read models hold every order, return and question;
4. the notebook runs with ``SHOPSTREAM_DATA_DIR`` pointing at ``up``'s data folder, in a
   kernel of this venv, and its key results are compared with independent sums over
   the events read back from the broker.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import nbformat
import orjson
import pytest
from nbclient import NotebookClient

from pipelines.sink.app import feeds_for
from pipelines.sink.writer import LakeWriter, Record
from producers.simulator import ShopSimulator, SimConfig
from readmodels.generations import open_for
from readmodels.lake import connect
from readmodels.queries import NoReadModels, ReadModels
from shopstream.brokers import make_broker
from shopstream.errors import UserError
from shopstream.settings import Settings, load_settings, settings_env
from shopstream.shop.world import CATEGORIES, build_shop
from shopstream.topics import CATALOG, INGRESS_BY_CHANNEL, STOCK_EVENTS
from support.processes import TopicReader

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "order_history.ipynb"
SPEEDUP = 360
SEND_S = 50
"""Event time runs at most 360 times wall time: five hours of shop in 50 s. The pipeline
keeps up, so a return (15 minutes or more after its order, 2.5 s here) almost always
reaches finance after the order's invoice, as it would live; sent all at once, returns
would overtake their orders and finance could refund none of them."""
SCALE = 0.05
"""A twentieth of the usual customer traffic (a few thousand records), with flash sales:
enough for returns, stock-outs and SKU pairs, little enough for a 2-core machine."""
SEED = 7
CELL_TIMEOUT_S = 600  # generous: 2 cores, shared with the apps of `up`
RESULTS_MARK = "NOTEBOOK-RESULTS:"
START_MS = 1_764_590_400_000  # a Monday, 12:00 UTC (read models written without a broker)
QUIET_S = 5.0
"""The read models count as complete once their row counts stop changing for this long."""


@dataclass
class History:
    """What the pipeline was given and what it wrote (events read back from the broker)."""

    settings: Settings
    ingress: list[Any]
    """Every customer event the simulator sent (decoded), in no particular order."""
    stock_events: list[Any]
    up_log: Path
    seconds: float

    def of_type(self, event_type: str) -> list[Any]:
        return [e for e in self.ingress if e.event_type == event_type]


def start_time() -> str:
    """20:00 UTC two days back: the history crosses midnight, ends in the past and stays
    well inside the topics' retention (which counts from the records' event time)."""
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    return datetime(day.year, day.month, day.day, 20, tzinfo=UTC).isoformat()


def table_counts(rm: ReadModels) -> dict[str, int]:
    names = ("orders", "order_lines", "returns", "stock_questions", "stock_answers",
             "stock_movements", "stock_rejections", "invoices", "refunds")  # fmt: skip
    query = " UNION ALL ".join(
        f"SELECT '{name}' AS t, count(*) AS n FROM {rm.table(name)}" for name in names
    )
    return dict(rm.sql(query).iter_rows())


@contextmanager
def running_shop(folder: Path) -> Iterator[History]:
    """A history through the real pipeline; yields while ``up`` still runs."""
    started = time.monotonic()
    broker = make_broker("embedded", log_path=folder / "broker.log").start()
    settings = load_settings(broker_address=broker.address, data_dir=folder / "data")
    env = settings_env(settings)
    up: subprocess.Popen[bytes] | None = None
    up_log = folder / "up.log"
    try:
        with open(up_log, "wb") as log:
            up = subprocess.Popen(
                [sys.executable, "-m", "shopstream", "up", "--broker", broker.address,
                 "--plain", "--without", "producer"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
            )  # fmt: skip
        rm = ReadModels(settings)
        wait_for(up, up_log, lambda: table_counts(rm) is not None, 120, "the sink to start")
        produce = subprocess.run(
            [sys.executable, "-m", "shopstream", "produce",
             "--duration", f"{SEND_S}s", "--rate", "0", "--speedup", str(SPEEDUP),
             "--seed", str(SEED),
             "--scale", str(SCALE), "--flash-sale", "--start-time", start_time()],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert produce.returncode == 0, produce.stdout + produce.stderr
        reader = TopicReader(settings, [t.name for t in INGRESS_BY_CHANNEL.values()])
        reader.drain(quiet=2.0)
        ingress = [r.event for rs in reader.records.values() for r in rs if r.event is not None]
        reader.close()
        customer = Counter(e.event_type for e in ingress if e.event_type != "Restocked")
        assert customer["OrderPlaced"] > 1000 and customer["ItemReturned"], produce.stdout
        expected = {
            "orders": customer["OrderPlaced"], "returns": customer["ItemReturned"],
            "stock_questions": customer["StockQuestionAsked"],
            "stock_answers": customer["StockQuestionAsked"],
        }  # fmt: skip
        settled = Settled(QUIET_S)

        def complete() -> bool:
            counts = table_counts(rm)
            return settled(counts) and all(counts[k] == n for k, n in expected.items())

        wait_for(up, up_log, complete, 240, f"the read models to hold {expected}")
        rm.close()
        stock = TopicReader(settings, [STOCK_EVENTS.name])
        stock.drain(quiet=2.0)
        stock_events = stock.events(STOCK_EVENTS.name)
        stock.close()
        yield History(settings, ingress, stock_events, up_log, time.monotonic() - started)
        assert up.poll() is None, "up stopped while the notebook read the read models"
    finally:
        if up is not None and up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
        broker.stop()
    assert up.returncode == 0, up_log.read_text()[-3000:]


class Settled:
    """``settled(counts)``: true once ``counts`` stayed the same for ``quiet`` seconds."""

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self.last: object = None
        self.since = time.monotonic()

    def __call__(self, counts: object) -> bool:
        if counts != self.last:
            self.last, self.since = counts, time.monotonic()
        return time.monotonic() - self.since >= self.quiet


def wait_for(
    up: subprocess.Popen[bytes], log: Path, done: Callable[[], bool], timeout: float, what: str
) -> None:
    """Poll ``done`` every second while ``up`` runs; no read models yet counts as not done."""
    deadline = time.monotonic() + timeout
    while True:
        assert up.poll() is None, f"up exited early:\n{log.read_text()[-3000:]}"
        try:
            if done():
                return
        except (NoReadModels, UserError):  # no lake yet, or the sink is creating it
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def kernel_spec(folder: Path) -> str:
    """A kernelspec for this venv's ipykernel (never whatever ``python3`` a machine has)."""
    spec = folder / "kernels" / "shopstream-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "shopstream (test)", "language": "python",
    }))  # fmt: skip
    return "shopstream-test"


PROBE = f"""
import json as _json
def _frame(df):
    return [{{k: str(v) for k, v in row.items()}} for row in df.iter_rows(named=True)]
print({RESULTS_MARK!r} + _json.dumps({{
    "revenue_by_channel_day": _frame(revenue_by_channel_day),
    "lines_per_order": _frame(lines_per_order),
    "returns_by_category": _frame(returns_by_category),
    "returns_by_reason": _frame(returns_by_reason),
    "conversion": _frame(conversion),
    "rejected_skus": _frame(rejected_skus),
}}))
"""
"""Appended to the executed copy: the notebook's key results as JSON (exact strings)."""


def execute(folder: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    monkeypatch.setenv("JUPYTER_PATH", str(folder))
    monkeypatch.setenv("SHOPSTREAM_DATA_DIR", str(data_dir))
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel_spec(folder),
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )  # fmt: skip
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    printed = "".join(
        out.get("text", "") for out in nb.cells[-1].outputs if out.output_type == "stream"
    )
    line = next(x for x in printed.splitlines() if x.startswith(RESULTS_MARK))
    return nb, json.loads(line.removeprefix(RESULTS_MARK))


def expected_revenue_by_channel_day(history: History) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for e in history.of_type("OrderPlaced"):
        day = e.occurred_at.astimezone(UTC).date().isoformat()
        out[e.channel, day] += sum(
            (line.unit_price * line.qty for line in e.payload.lines), Decimal(0)
        )
    return dict(out)


@pytest.mark.timeout(600)  # ~90 s here: ~80 s of pipeline, ~10 s of notebook
def test_the_notebook_runs_on_a_short_history_and_its_figures_add_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_shop(tmp_path) as history:
        began = time.monotonic()
        nb, results = execute(tmp_path, Path(history.settings.data_dir), monkeypatch)
        executed_s = time.monotonic() - began
    print(f"history built in {history.seconds:.0f}s, notebook executed in {executed_s:.0f}s")

    # Revenue by channel and day: exactly the sum over every order the simulator sent.
    got = {
        (r["channel"], r["day"]): Decimal(r["revenue"]) for r in results["revenue_by_channel_day"]
    }
    assert got == expected_revenue_by_channel_day(history)
    assert len({day for _, day in got}) >= 2, "the history should cross midnight"

    orders = history.of_type("OrderPlaced")
    lines = Counter(len(e.payload.lines) for e in orders)
    assert {int(r["lines"]): int(r["orders"]) for r in results["lines_per_order"]} == lines

    # Returns by reason and by category (the shop catalog's), against the events.
    returns = history.of_type("ItemReturned")
    assert returns, "the history should hold returns"
    by_reason = Counter(e.payload.reason for e in returns)
    assert {r["reason"]: int(r["returns"]) for r in results["returns_by_reason"]} == by_reason
    shop = build_shop()
    category = {s: CATEGORIES[c].name for s, c in zip(shop.sku_ids, shop.sku_category, strict=True)}
    sold: Counter[str] = Counter()
    for e in orders:
        for line in e.payload.lines:
            sold[category[line.sku]] += line.qty
    back: Counter[str] = Counter()
    for e in returns:
        back[category[e.payload.sku]] += e.payload.qty
    rates = {r["category"]: r for r in results["returns_by_category"]}
    assert set(rates) == set(sold)
    for name, row in rates.items():
        assert int(row["sold_units"]) == sold[name] and int(row["returned_units"]) == back[name]

    # Question to purchase: a question converts if its customer ordered that SKU later.
    bought: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for e in orders:
        for line in e.payload.lines:
            bought[e.payload.customer_id, line.sku].append(e.occurred_at)
    questions = history.of_type("StockQuestionAsked")
    converted = sum(
        any(t > q.occurred_at for t in bought.get((q.payload.customer_id, q.payload.sku), []))
        for q in questions
    )
    (summary,) = results["conversion"]
    assert int(summary["questions"]) == len(questions)
    assert int(summary["converted"]) == converted

    # Stock-outs: the SKUs of rejected orders, as the stock service said on its topic.
    short: Counter[str] = Counter()
    for e in history.stock_events:
        if e.event_type == "StockRejected":
            for s in e.payload.shortages:
                short[s.sku] += 1
    assert {r["sku"]: int(r["rejections"]) for r in results["rejected_skus"]} == short

    # Every plot was drawn (each one is an image output).
    images = sum(
        "image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])
    )
    assert images >= 6, images


def notes(nb: Any) -> str:
    """Every note the notebook displayed (its word for "too little data for this")."""
    return "\n".join(
        out["data"]["text/markdown"]
        for cell in nb.cells for out in cell.get("outputs", [])
        if "text/markdown" in out.get("data", {}) and "**Note.**" in out["data"]["text/markdown"]
    )  # fmt: skip


@pytest.mark.parametrize("orders", [0, 300])
def test_the_notebook_says_so_when_read_models_are_empty(
    orders: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orders only (or nothing), written by the sink's writer: no returns, questions, stock."""
    settings = load_settings(data_dir=tmp_path / "data")
    con = connect(settings, read_only=False)
    generation, _ = open_for(con, "broker-of-the-test")
    records: list[Record] = []
    for rec in ShopSimulator(SimConfig(start_ms=START_MS, seed=3)).records():
        if len(records) == orders:
            break
        if rec.event_type == "OrderPlaced":
            records.append(
                ("orders", 0, len(records), rec.timestamp_ms, rec.key, rec.value, rec.headers)
            )
    if records:
        LakeWriter(con, generation, feeds_for(CATALOG)).write(records)
    con.close()

    nb, results = execute(tmp_path, tmp_path / "data", monkeypatch)

    said = notes(nb)
    assert "No returns yet" in said and "No stock questions yet" in said, said
    assert "No stock-outs and no rejected orders yet" in said, said
    revenue = sum(Decimal(r["revenue"]) for r in results["revenue_by_channel_day"])
    expected = sum(
        (Decimal(str(line["unit_price"])) * line["qty"]
         for *_, value, _ in records for line in orjson.loads(value)["payload"]["lines"]),
        Decimal(0),
    )  # fmt: skip
    assert revenue == expected
    if not orders:
        assert "No orders yet" in said, said


def test_the_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]  # fmt: skip
    assert not dirty, f"cells {dirty} carry outputs: clear them before committing"
