"""What every benchmark stage shares: figures and their baselines, sizes, the run's
context (broker, folders, progress), child processes and small meters.

A :class:`Figure` is one measured number with the baseline it is judged against, both
from the same run; its ratio and whether it meets its :class:`Target` follow from them.
A stage returns a :class:`StageResult` (figures, details for the JSON, notes for the
report); :mod:`benchmarks.report` turns them into markdown, JSON and plots.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pipelines.runtime.quix import COMMIT_INTERVAL_S as APP_COMMIT_S
from pipelines.sink.app import COMMIT_INTERVAL_S as SINK_COMMIT_S
from shopstream.settings import Settings, load_settings, settings_env

Mode = Literal["quick", "full"]
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding the ``benchmarks`` package (a child process's ``PYTHONPATH``)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A goal a figure should meet: on its ratio to the baseline or on its value."""

    on: Literal["ratio", "value"]
    op: Literal[">=", "<="]
    threshold: float
    source: str = ""
    """Where the goal comes from (an issue number)."""

    def met(self, figure: Figure) -> bool | None:
        measured = figure.ratio if self.on == "ratio" else figure.value
        if measured is None or math.isnan(measured):
            return None
        return measured >= self.threshold if self.op == ">=" else measured <= self.threshold

    def describe(self, unit: str) -> str:
        number = f"{self.threshold:g}x" if self.on == "ratio" else f"{self.threshold:g} {unit}"
        return f"{self.op} {number}" + (f" ({self.source})" if self.source else "")


@dataclass(slots=True)
class Figure:
    """One measured number next to its same-run baseline (if it has one)."""

    key: str
    """Stable id in the JSON (``router.exactly-once.router``)."""
    label: str
    value: float
    unit: str
    baseline_label: str | None = None
    baseline_value: float | None = None
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline_value is None or not self.baseline_value:
            return None
        return self.value / self.baseline_value

    @property
    def met(self) -> bool | None:
        return self.target.met(self) if self.target else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = (
            None if self.target is None else asdict(self.target) | {
                "text": self.target.describe(self.unit)
            }
        )  # fmt: skip
        out["ratio"], out["met"] = self.ratio, self.met
        return out


@dataclass(slots=True)
class StageResult:
    """What one stage measured."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "seconds": round(self.seconds, 2),
            "error": self.error, "notes": self.notes,
            "figures": [f.as_dict() for f in self.figures], "details": self.details,
        }  # fmt: skip


PRODUCT_INTERVALS = (APP_COMMIT_S, SINK_COMMIT_S)
"""The commit intervals of the router and the sink as ``shopstream up`` runs them."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each stage does; :data:`QUICK` and :data:`FULL` are the two presets."""

    produce_events: int
    produce_rounds: int
    router_events: int
    router_rounds: int
    router_guarantees: tuple[str, ...]
    router_apps: tuple[str, ...]
    analytics_guarantees: tuple[str, ...]
    sink_events: int
    """Channel events of the simulated shop (:func:`benchmarks.inputs.shop_run`): the
    analytics read its four typed topics, the sink every topic it leads to."""
    sink_rounds: int
    """Rounds of the sink and its baseline, alternating (as the router's rounds)."""
    inlining_commits: int
    inlining_batch: int
    replay_orders: int
    e2e_rates: tuple[int, ...]
    e2e_step_s: float
    freshness_rates: tuple[int, ...]
    freshness_s: float
    freshness_intervals: tuple[tuple[float, float], ...]
    """``(router, sink)`` commit intervals to measure; the first is the product's."""
    query_orders: tuple[int, ...]
    query_base: int
    """Orders simulated once; bigger lakes are copies of them shifted in time."""
    query_reps: int
    quix_idle_s: float
    """How long a benchmark Quix app waits for more input before it stops."""


QUICK = Sizes(
    produce_events=20_000, produce_rounds=1,
    router_events=6_000, router_rounds=1, router_guarantees=("exactly-once",),
    router_apps=("quix json apply", "router"),
    analytics_guarantees=("exactly-once",),
    sink_events=1_500, sink_rounds=1, inlining_commits=3, inlining_batch=300,
    replay_orders=50_000,
    e2e_rates=(250,), e2e_step_s=5.0,
    freshness_rates=(1000,), freshness_s=4.0,
    freshness_intervals=(PRODUCT_INTERVALS,),
    query_orders=(20_000, 100_000), query_base=20_000, query_reps=5,
    quix_idle_s=1.5,
)  # fmt: skip
FULL = Sizes(
    produce_events=200_000, produce_rounds=3,
    router_events=200_000, router_rounds=3,
    router_guarantees=("exactly-once", "at-least-once"),
    router_apps=("quix pass-through", "quix json apply", "router, no dedupe", "router"),
    analytics_guarantees=("exactly-once", "at-least-once"),
    sink_events=100_000, sink_rounds=3, inlining_commits=1000, inlining_batch=300,
    replay_orders=1_000_000,
    e2e_rates=(250, 500, 1000, 1500, 2000, 3000, 5000), e2e_step_s=60.0,
    freshness_rates=(1000, 5000), freshness_s=60.0,
    freshness_intervals=(PRODUCT_INTERVALS, (1.0, 0.1), (0.1, 0.1)),
    query_orders=(1_000_000, 10_000_000), query_base=200_000, query_reps=30,
    quix_idle_s=3.0,
)  # fmt: skip


class Reporter:
    """Progress while the benchmark runs: a rich display on a terminal, lines otherwise."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.live = console.is_terminal
        self._progress: Progress | None = None
        self._overall: Any = None
        self._local = threading.local()  # each thread's stage (--quick runs two at once)
        self.total = total

    def __enter__(self) -> Reporter:
        if self.live:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                console=self.console, refresh_per_second=4,
            )  # fmt: skip
            self._progress.start()
            self._overall = self._progress.add_task("shopstream bench", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        started = time.monotonic()
        _steps.info("stage: %s", title)
        if self._progress is not None:
            self._local.current = self._progress.add_task(title, total=None)
        else:
            self.console.print(f"[bold]{title}[/bold] ...")
        try:
            yield
        finally:
            took = time.monotonic() - started
            _steps.info("stage done in %.1fs: %s", took, title)
            if self._progress is not None:
                self._progress.update(
                    self._local.current,
                    description=f"{title} [dim]({took:.0f}s)",
                    total=1,
                    completed=1,
                )
                self._progress.advance(self._overall)
            else:
                self.console.print(f"  done in {took:.1f}s")

    def step(self, text: str) -> None:
        """What the current stage is doing now (also logged, with the time: where a run
        spends its minutes is in ``logs/bench.log``)."""
        _steps.info("step: %s", text)
        current = getattr(self._local, "current", None)
        if self._progress is not None and current is not None:
            self._progress.update(current, description=text)
        else:
            self.console.print(f"  {text}")

    def log(self, text: str) -> None:
        self.console.print(f"  [dim]{text}[/dim]")


_steps = logging.getLogger("benchmarks.steps")


class QuietReporter(Reporter):
    """For a stage module run on its own: progress lines on stderr."""

    def __init__(self) -> None:
        super().__init__(Console(stderr=True), 1)
        self.live = False


@dataclass
class Bench:
    """The context of one benchmark run, handed to every stage."""

    mode: Mode
    sizes: Sizes
    work: Path
    """Scratch folder (data dirs, lakes, state stores): deleted at the end."""
    out: Path
    """Where the report, plots, logs and profiles go."""
    broker_address: str
    broker_kind: str
    e2e_broker_kind: str
    reporter: Reporter
    fast_joins: bool = True
    """Short consumer-group session timeouts (the embedded broker delays every join by
    half of it; Apache Kafka refuses less than 6 s); join time is excluded from every
    figure."""
    cache: dict[str, Any] = field(default_factory=dict)
    """Inputs several stages share (the simulated shop run), made once per run."""

    def settings(self, name: str, **overrides: Any) -> Settings:
        """Settings for one part of a stage: its own data dir under :attr:`work`."""
        data_dir = self.work / name
        data_dir.mkdir(parents=True, exist_ok=True)
        joins: dict[str, Any] = (
            {"session_timeout_ms": 1000, "heartbeat_interval_ms": 300} if self.fast_joins else {}
        )
        options = {"broker_address": self.broker_address, "data_dir": data_dir} | joins
        return load_settings(**(options | overrides))

    def log_path(self, name: str) -> Path:
        path = self.out / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child process: ``settings`` and this package importable."""
    env = settings_env(settings)
    paths = [str(PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run_child(
    module: str, args: Sequence[str], settings: Settings, log: Path, timeout: float = 900
) -> dict[str, Any]:
    """Run ``python -m module args`` to the end; return the JSON of its last stdout line.

    Its stderr goes to ``log``; a failure raises with the log's last lines.
    """
    with open(log, "ab") as err:
        done = subprocess.run(
            module_command(module, *args), env=child_env(settings), stdout=subprocess.PIPE,
            stderr=err, timeout=timeout, check=False,
        )  # fmt: skip
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{module} exited with {done.returncode}: {' | '.join(tail)}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@dataclass
class Meter:
    """First and last processing time and a count, from Quix's per-message callback."""

    first: float = 0.0
    last: float = 0.0
    count: int = 0

    def __call__(self, *_: Any) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.last = now
        self.count += 1

    @property
    def seconds(self) -> float:
        return self.last - self.first

    @property
    def rate(self) -> float:
        return (self.count - 1) / (self.last - self.first) if self.count > 1 else 0.0


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., ...}`` of ``values`` (nearest rank; NaN if there are none)."""
    if not values:
        return {f"p{p}": math.nan for p in points}
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        out[f"p{p}"] = ordered[rank]
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        import psutil

        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # psutil is a dev dependency
        memory_gib = None
    return {
        "cores": os.cpu_count(), "memory_gib": memory_gib, "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "load_average": list(os.getloadavg()),
    }  # fmt: skip


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.2) -> bool:
    """Poll ``check`` until true or ``timeout``; return whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()
