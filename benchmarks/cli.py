"""``shopstream bench [--quick]``: every benchmark stage in one run, one report.

Registered through the ``shopstream.commands`` entry point (``bench =
"benchmarks.cli:bench"``), so the core never imports this package. One broker is started
for the throughput stages (embedded unless ``--broker-kind kafka``); the end-to-end stage
starts its own (Apache Kafka in a full run when Java is there: the embedded broker's high
watermarks make lag read low). Each stage's figures stand next to a baseline measured in
the same run; a stage that fails is reported as failed and the others still run.

The report (``report.md``, ``report.json``, PNG plots, logs, profiles) goes to
``artifacts/bench/quick/`` or ``artifacts/bench/full/`` (git-ignored) unless ``--out``.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console

from benchmarks.common import FULL, QUICK, Bench, Reporter, StageResult
from shopstream.brokers import make_broker

STAGES: dict[str, tuple[str, str]] = {
    # name -> (module, title shown while it runs)
    "clients": ("benchmarks.clients", "1 raw clients"),
    "producers": ("benchmarks.produce_throughput", "2 producers"),
    "router": ("benchmarks.router_throughput", "3 router"),
    "analytics": ("benchmarks.analytics_throughput", "4 analytics"),
    "sink": ("benchmarks.sink_throughput", "5 sink"),
    "replay": ("benchmarks.replay_throughput", "6 replay"),
    "e2e": ("benchmarks.endtoend", "7 end to end (+10 RSS)"),
    "freshness": ("benchmarks.freshness", "8 freshness"),
    "queries": ("benchmarks.dashboard_queries", "9 dashboard queries"),
}
DEFAULT_OUT = Path("artifacts") / "bench"


def _names(value: str | None) -> list[str]:
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: choose from {', '.join(STAGES)}")
    return names


@click.command()
@click.option(
    "--quick", is_flag=True, help="Small sizes, short steps: a smoke run in under two minutes."
)
@click.option("--only", metavar="STAGE[,STAGE]", help=f"Run only these ({', '.join(STAGES)}).")
@click.option("--skip", metavar="STAGE[,STAGE]", help="Run every stage but these.")
@click.option(
    "--broker-kind",
    type=click.Choice(["embedded", "kafka"]),
    default="embedded",
    show_default=True,
    help="Broker of the throughput stages.",
)
@click.option(
    "--e2e-broker-kind",
    type=click.Choice(["auto", "embedded", "kafka"]),
    default="auto",
    show_default=True,
    help="Broker of the end-to-end stage (auto: kafka in a full run if Java is "
    "installed, else embedded).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Report folder (default artifacts/bench/quick or artifacts/bench/full).",
)
@click.option("--keep-work", is_flag=True, help="Keep the scratch folder (lakes, state).")
def bench(
    quick: bool,
    only: str | None,
    skip: str | None,
    broker_kind: str,
    e2e_broker_kind: str,
    out: Path | None,
    keep_work: bool,
) -> None:
    """Benchmark every stage against a same-run baseline; write one report."""
    from benchmarks import report

    mode = "quick" if quick else "full"
    chosen = _names(only) or list(STAGES)
    chosen = [n for n in chosen if n not in _names(skip)]
    out = (out or DEFAULT_OUT / mode).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    if e2e_broker_kind == "auto":
        e2e_broker_kind = "kafka" if not quick and shutil.which("java") else "embedded"
    _quiet_logs(out / "logs" / "bench.log")
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="shopstream-bench-"))
    started = time.monotonic()
    started_at = datetime.now(UTC)
    results: list[StageResult] = []
    broker = make_broker(broker_kind, log_path=out / "logs" / f"broker-{broker_kind}.log")  # type: ignore[arg-type]
    console.print(f"shopstream bench ({mode}): {len(chosen)} stages, report in {out}")
    try:
        broker.start()
        with Reporter(console, len(chosen)) as reporter:
            context = Bench(
                mode=mode, sizes=QUICK if quick else FULL, work=work, out=out,
                broker_address=broker.address, broker_kind=broker_kind,
                e2e_broker_kind=e2e_broker_kind, reporter=reporter,
                fast_joins=broker_kind == "embedded",
            )  # fmt: skip
            results = _run_stages(chosen, context, reporter, beside=QUICK_BESIDE if quick else ())
    finally:
        broker.stop()
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    paths = report.write(
        results, out, mode=mode, started_at=started_at, seconds=time.monotonic() - started,
        broker_kind=broker_kind, e2e_broker_kind=e2e_broker_kind,
        sizes=QUICK if quick else FULL,
    )  # fmt: skip
    console.print(report.console_table(results))
    for path in paths:
        console.print(f"wrote {path}")
    failed = [r.name for r in results if r.error]
    if failed:
        raise click.ClickException(f"stages failed: {', '.join(failed)} (see {out}/logs)")


QUICK_BESIDE = ("e2e", "freshness")
"""Stages ``--quick`` runs in a second lane, beside the others: they mostly wait on
processes of their own (the end-to-end stage a broker and a whole ``up``; freshness a
router and a sink, warmed up) - 46 s and 26 s of a 167 s quick run when run one after the
other. Every figure of a quick run is noisier for it; a full run runs each stage alone."""


def _run_stages(
    chosen: list[str], bench: Bench, reporter: Reporter, beside: tuple[str, ...] = ()
) -> list[StageResult]:
    """Run ``chosen`` in order, those in ``beside`` in a thread of their own once the
    first stage is done (stage 1's raw-produce figure is the end-to-end baseline);
    results in the order of ``chosen``."""
    done: dict[str, StageResult] = {}

    def run(name: str) -> None:
        module, title = STAGES[name]
        with reporter.stage(title):
            done[name] = _run_stage(name, module, bench)

    aside = [n for n in chosen if n in beside]
    in_line = [n for n in chosen if n not in beside]
    lane: threading.Thread | None = None
    if aside:
        lane = threading.Thread(target=lambda: [run(n) for n in aside], name="bench-beside")
    for i, name in enumerate(in_line):
        run(name)
        if i == 0 and lane is not None:
            lane.start()
    if lane is not None:
        if not lane.is_alive() and not in_line:
            lane.start()
        lane.join()
    return [done[n] for n in chosen]


def _run_stage(name: str, module: str, bench: Bench) -> StageResult:
    started = time.monotonic()
    stage: Callable[[Bench], StageResult] = importlib.import_module(module).stage
    try:
        result = stage(bench)
    except Exception as exc:
        logging.getLogger("benchmarks").error("stage %s failed:\n%s", name,
                                              traceback.format_exc())  # fmt: skip
        result = StageResult(name, STAGES[name][1], error=f"{type(exc).__name__}: {exc}"[:500])
    result.seconds = time.monotonic() - started
    return result


def _quiet_logs(path: Path) -> None:
    """Library and app logs of this process go to a file, not over the progress display."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("quixstreams", "pipelines", "shopstream", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
