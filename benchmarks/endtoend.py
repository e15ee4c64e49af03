"""End to end: the highest producer rate the whole topology sustains at steady lag, and
the memory of every process meanwhile.

    python benchmarks/endtoend.py [--broker-kind kafka] [--rates 250,500,1000] [--step 60]

A broker of its own (Apache Kafka when asked: the embedded broker's high watermarks are
per batch, so lag there reads low), then ``shopstream up --broker ADDR --without producer
--plain`` in a child process: every app of ``up`` (router, services, analytics, sink,
dashboard) as the user runs them. The load comes from here: the opening stock first,
then the shop simulator's traffic (a fresh seed per step, event time near the wall
clock) at stepped rates, each held for ``--step`` seconds. Every second the stage
samples what the producer sent, what each app consumed (``data/run/NAME.json``), every
consumer group's lag (committed offsets against high watermarks,
:func:`dashboard.broker.consumer_lag`) and every process's RSS (psutil).

A step is **sustained** when every group's lag stays bounded: at the step's end it is
below 3 seconds' worth of the producer rate, or over the step's second half it grows by
less than 5% of the rate per second and ends below 10 seconds' worth. The figure is the
highest rate of a sustained step before the first one that is not (the stage stops
stepping there).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import (
    Bench,
    Figure,
    QuietReporter,
    Reporter,
    StageResult,
    child_env,
    module_command,
    wait_until,
)
from shopstream.brokers import free_port, make_broker
from shopstream.settings import Settings, load_settings
from shopstream.topics import CATALOG, Namespace

SAMPLE_S = 1.0
GROWTH_LIMIT = 0.05
"""Lag may grow by at most this share of the producer rate per second (second half)."""
BACKLOG_LIMIT_S = 10.0
"""Lag at the end of a step must be below this many seconds of the producer rate."""
SMALL_LAG_S = 3.0
"""A lag below this many seconds of the rate counts as bounded whatever its slope (a
group committing every second shows a sawtooth of about a second's worth)."""
SETTLED_LAG = 200
"""Before the first step, every group's lag must fall below this (the opening stock)."""
STARTUP_TIMEOUT_S = 180.0


# --- the load ------------------------------------------------------------------------------


class Driver:
    """Sends the simulated shop's records at a given rate from a thread of its own, to
    the ingress topics of ``namespace``; ``on_sent(record, wall_time)`` sees each one."""

    def __init__(
        self,
        settings: Settings,
        namespace: Namespace = CATALOG,
        on_sent: Callable[[Any, float], None] | None = None,
    ) -> None:
        from shopstream.kafka import make_producer
        from shopstream.topics import INGRESS_BY_CHANNEL

        self.producer = make_producer(settings)
        self.topics = {c: namespace.topic(spec).name for c, spec in INGRESS_BY_CHANNEL.items()}
        self.on_sent = on_sent
        self.sent = 0
        self.failed = 0
        self.rate = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _deliver(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def _send(self, rec: Any) -> None:
        topic = self.topics[rec.channel]
        while True:
            try:
                self.producer.produce(
                    topic, rec.value, rec.key, headers=rec.headers,
                    timestamp=rec.timestamp_ms, on_delivery=self._deliver,
                )  # fmt: skip
                break
            except BufferError:
                self.producer.poll(0.02)

    def opening(self) -> int:
        """The opening stock (one restock per SKU and location), as fast as it goes."""
        from producers.simulator import ShopSimulator, SimConfig

        count = 0
        for rec in ShopSimulator(SimConfig(start_ms=int(time.time() * 1000), seed=1)).opening():
            self._send(rec)
            count += 1
        self.producer.flush(60)
        return count

    def start(self, rate: float) -> None:
        """Send at ``rate`` records/s until :meth:`stop` (a new simulated day each time)."""
        self.stop()
        self._stop.clear()
        self.rate = rate
        self._thread = threading.Thread(target=self._run, args=(rate,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(10)
            self._thread = None
        self.rate = 0.0

    def _run(self, rate: float) -> None:
        from producers.app import realtime_scale
        from producers.simulator import ShopSimulator, SimConfig

        now = int(time.time() * 1000)
        config = SimConfig(start_ms=now, seed=int.from_bytes(os.urandom(4), "big"),
                           scale=realtime_scale(now, rate))  # fmt: skip
        records = ShopSimulator(config).records()
        started = time.monotonic()
        sent = 0
        poll = self.producer.poll
        while not self._stop.is_set():
            allowed = int(rate * (time.monotonic() - started)) + 1
            if sent >= allowed:
                poll(0)
                time.sleep(min(0.005, (sent + 1 - allowed) / rate))
                continue
            for _ in range(min(allowed - sent, 500)):
                rec = next(records)
                self._send(rec)
                if self.on_sent is not None:
                    self.on_sent(rec, time.time())
                sent += 1
                self.sent += 1
            poll(0)
        self.producer.flush(30)


# --- what the stage watches ------------------------------------------------------------------


@dataclass
class Samples:
    t: list[float] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    consumed: dict[str, list[int | None]] = field(default_factory=lambda: defaultdict(list))
    lag: dict[str, list[int | None]] = field(default_factory=lambda: defaultdict(list))
    rss_mib: dict[str, list[float | None]] = field(default_factory=lambda: defaultdict(list))
    rate: list[float] = field(default_factory=list)


class Monitor:
    """Samples sent, consumed, lag and RSS every :data:`SAMPLE_S` from a thread."""

    def __init__(self, settings: Settings, driver: Driver, broker_pid: int | None) -> None:
        self.settings = settings
        self.driver = driver
        self.broker_pid = broker_pid
        self.samples = Samples()
        self.peak_mib: dict[str, float] = defaultdict(float)
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors = 0

    def start(self) -> Monitor:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.sample()
            except Exception:
                self.errors += 1
            self._stop.wait(max(0.0, SAMPLE_S - (time.monotonic() - began)))

    def sample(self) -> None:
        import psutil

        from dashboard.broker import consumer_lag
        from shopstream.status import read_statuses, run_dir

        s = self.samples
        statuses = read_statuses(run_dir(self.settings))
        lag = consumer_lag(self.settings)
        per_group: dict[str, int] = defaultdict(int)
        for row in lag.iter_rows(named=True):
            per_group[row["app"]] += max(0, int(row["lag"] or 0))
        s.t.append(self.now())
        s.sent.append(self.driver.sent)
        s.rate.append(self.driver.rate)
        pids = {name: st.pid for name, st in statuses.items() if name != "producer"}
        if self.broker_pid:
            pids["broker"] = self.broker_pid
        for name in sorted(set(pids) | set(s.rss_mib)):
            value = None
            if name in pids:
                try:
                    proc = psutil.Process(pids[name])
                    rss = proc.memory_info().rss + sum(
                        c.memory_info().rss for c in proc.children(recursive=True)
                    )
                    value = rss / 2**20
                    self.peak_mib[name] = max(self.peak_mib[name], value)
                except psutil.Error:
                    value = None
            _pad(s.rss_mib[name], len(s.t) - 1).append(value)
        for name, st in statuses.items():
            if name != "producer":
                _pad(s.consumed[name], len(s.t) - 1).append(st.consumed)
        for group in sorted(set(per_group) | set(s.lag)):
            _pad(s.lag[group], len(s.t) - 1).append(per_group.get(group))


def _pad(values: list[Any], length: int) -> list[Any]:
    while len(values) < length:
        values.append(None)
    return values


def _slope(ts: list[float], ys: list[float]) -> float:
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else 0.0


def _input_rate(samples: Samples, name: str, start: float, end: float) -> float | None:
    """Records per second app ``name`` consumed between ``start`` and ``end``."""
    points = [(t, v) for t, v in zip(samples.t, samples.consumed.get(name, []), strict=False)
              if start <= t <= end and v is not None]  # fmt: skip
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def judge(samples: Samples, start: float, end: float, rate: float) -> dict[str, Any]:
    """Whether every group's lag stayed bounded between ``start`` and ``end``.

    Each group is judged against the rate of its own input, not the producer's: the
    sink reads every topic (about seven records per event sent), so 1,500 records of lag
    are a second of its input, not six seconds of the producer's."""
    half = start + (end - start) / 2
    groups: dict[str, dict[str, Any]] = {}
    for group, values in samples.lag.items():
        points = [(t, v) for t, v in zip(samples.t, values, strict=False)
                  if half <= t <= end and v is not None]  # fmt: skip
        if not points:
            continue
        slope = _slope([p[0] for p in points], [float(p[1]) for p in points])
        final = points[-1][1]
        scale = max(rate, _input_rate(samples, group, start, end) or 0.0)
        bounded = final <= SMALL_LAG_S * scale or (
            slope <= GROWTH_LIMIT * scale and final <= BACKLOG_LIMIT_S * scale
        )
        groups[group] = {"slope_per_s": slope, "final_lag": final, "input_per_s": scale,
                         "bounded": bounded}  # fmt: skip
    return {"bounded": bool(groups) and all(g["bounded"] for g in groups.values()),
            "groups": groups}  # fmt: skip


# --- the stage -------------------------------------------------------------------------------


def run(
    kind: str, rates: list[int], step_s: float, work: Path, logs: Path, reporter: Reporter,
    fast_joins: bool, settle_s: float = 120.0,
) -> dict[str, Any]:  # fmt: skip
    """Start a broker and ``up``, drive the steps, return what was measured."""
    broker = make_broker(kind, log_path=logs / f"e2e-broker-{kind}.log")  # type: ignore[arg-type]
    reporter.step(f"e2e: starting the {kind} broker")
    broker.start()
    up: subprocess.Popen[bytes] | None = None
    driver: Driver | None = None
    monitor: Monitor | None = None
    try:
        joins: dict[str, Any] = (
            {"session_timeout_ms": 1000, "heartbeat_interval_ms": 300} if fast_joins else {}
        )
        settings = load_settings(broker_address=broker.address, data_dir=work / "e2e",
                                 dashboard_port=free_port(), **joins)  # fmt: skip
        reporter.step("e2e: shopstream up --without producer (every other app)")
        with open(logs / "e2e-up.log", "ab") as out:
            up = subprocess.Popen(
                module_command("shopstream", "up", "--broker", broker.address,
                               "--without", "producer", "--plain"),
                env=child_env(settings), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        driver = Driver(settings)
        monitor = Monitor(settings, driver, broker.pid).start()
        ready = _wait_ready(settings, driver, monitor, reporter, up)
        reporter.step("e2e: waiting for the opening stock to drain")
        settled = wait_until(lambda: _settled(monitor.samples), settle_s, 0.5)
        steps: list[dict[str, Any]] = []
        for rate in rates:
            reporter.step(f"e2e: {rate:,} events/s for {step_s:.0f} s")
            start = monitor.now()
            sent_before = driver.sent
            driver.start(rate)
            time.sleep(step_s)
            driver.stop()
            end = monitor.now()
            verdict = judge(monitor.samples, start, end, rate)
            achieved = (driver.sent - sent_before) / (end - start)
            steps.append({"rate": rate, "achieved": achieved, "start_s": start, "end_s": end,
                          **verdict})  # fmt: skip
            reporter.log(f"{rate:,}/s: sent {achieved:,.0f}/s, "
                         f"{'bounded' if verdict['bounded'] else 'lag growing'}")  # fmt: skip
            if not verdict["bounded"]:
                break
        time.sleep(SAMPLE_S * 2)
        return {"broker": kind, "steps": steps, "ready_s": ready, "settled": settled,
                "settle_s": monitor.now() if not steps else steps[0]["start_s"],
                "samples": monitor.samples,
                "peak_mib": dict(monitor.peak_mib), "monitor_errors": monitor.errors,
                "failed_deliveries": driver.failed}  # fmt: skip
    finally:
        if driver is not None:
            driver.stop()
        if monitor is not None:
            monitor.stop()
        reporter.step("e2e: stopping up and the broker")
        if up is not None:
            _stop_up(up, work / "e2e")
        broker.stop()


def _wait_ready(
    settings: Settings, driver: Driver, monitor: Monitor, reporter: Reporter, up: Any
) -> float:
    """Until every app consumes: opening stock, then a trickle until the sink and the
    notifications (the end of the choreography) have consumed something."""
    from shopstream.status import read_statuses, run_dir

    started = time.monotonic()
    wanted = {"router", "stock", "finance", "customer-relations", "notifications", "analytics",
              "sink"}  # fmt: skip

    def apps_up() -> bool:
        if up.poll() is not None:
            raise RuntimeError(f"shopstream up exited with {up.returncode} (see e2e-up.log)")
        return wanted <= set(read_statuses(run_dir(settings)))

    if not wait_until(apps_up, STARTUP_TIMEOUT_S, 0.5):
        raise RuntimeError("the apps of shopstream up did not all start (see logs/e2e-up.log)")
    reporter.step("e2e: sending the opening stock")
    driver.opening()
    driver.start(50)

    def consuming() -> bool:
        statuses = read_statuses(run_dir(settings))
        return all(statuses[name].consumed > 0 for name in wanted if name in statuses)

    ok = wait_until(consuming, STARTUP_TIMEOUT_S, 0.5)
    driver.stop()
    if not ok:
        raise RuntimeError("not every app consumed within the start-up timeout")
    return time.monotonic() - started


def _settled(samples: Samples) -> bool:
    latest = [values[-1] for values in samples.lag.values() if values]
    return bool(latest) and all(v is not None and v <= SETTLED_LAG for v in latest)


def _stop_up(up: subprocess.Popen[bytes], data_dir: Path) -> None:
    """SIGTERM ``up`` (it stops its apps in order); kill what is left by pid."""
    import psutil

    try:
        children = psutil.Process(up.pid).children(recursive=True)
    except psutil.Error:
        children = []
    up.send_signal(signal.SIGTERM)
    try:
        up.wait(90)
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait(10)
    for child in children:
        try:
            if child.is_running():
                child.kill()
        except psutil.Error:
            pass


def stage(bench: Bench) -> StageResult:
    """``shopstream bench``: end-to-end sustained throughput and the processes' RSS."""
    result = StageResult("e2e", "End to end: sustained throughput at steady lag, memory (10)")
    sizes = bench.sizes
    kind = bench.e2e_broker_kind
    m = run(
        kind, list(sizes.e2e_rates), sizes.e2e_step_s, bench.work / f"e2e-{uuid.uuid4().hex[:4]}",
        bench.out / "logs", bench.reporter, fast_joins=kind == "embedded",
        settle_s=20.0 if bench.mode == "quick" else 180.0,
    )  # fmt: skip
    steps = m["steps"]
    sustained = [s for s in steps if s["bounded"]]
    best = max((s["rate"] for s in sustained), default=0)
    first_fail = next((s for s in steps if not s["bounded"]), None)
    raw = bench.cache.get("raw_produce_json")
    result.add(Figure(
        "e2e.sustained", "highest producer rate with every group's lag bounded", float(best),
        "events/s", "raw produce + json.dumps (stage 1)" if raw else None, raw,
        note=(f"steps {', '.join(str(s['rate']) for s in steps)} events/s of "
              f"{sizes.e2e_step_s:.0f} s; " + (
                  f"at {first_fail['rate']:,}/s lag grew in "
                  + ", ".join(g for g, v in first_fail["groups"].items() if not v["bounded"])
                  if first_fail else "every step was sustained (the real limit is higher)")),
    ))  # fmt: skip
    samples: Samples = m["samples"]
    for name, peak in sorted(m["peak_mib"].items()):
        result.add(Figure(f"rss.peak.{name}", f"peak RSS, {name}", peak, "MiB"))
    begin = steps[0]["start_s"] if steps else 0.0
    sink_rss = [v for t, v in zip(samples.t, samples.rss_mib.get("sink", []), strict=False)
                if v is not None and t >= begin]  # fmt: skip
    if sink_rss:
        settled = sink_rss[0]
        result.add(Figure(
            "rss.sink_growth", "sink RSS at the end vs at the first step", sink_rss[-1], "MiB",
            "sink RSS at the first step", settled,
            note=f"{len(sink_rss)} samples over {samples.t[-1] - begin:.0f} s; min "
            f"{min(sink_rss):.0f}, max {max(sink_rss):.0f} MiB",
        ))  # fmt: skip
    ts = samples.t
    produced = _per_second(ts, samples.sent)
    result.details = {
        "broker": kind, "steps": steps, "ready_s": m["ready_s"], "peak_mib": m["peak_mib"],
        "monitor_errors": m["monitor_errors"], "failed_deliveries": m["failed_deliveries"],
        "series": {
            "t": ts, "produced_per_s": produced,
            "consumed_per_s": {k: _per_second(ts, v) for k, v in samples.consumed.items()},
            "lag": dict(samples.lag),
        },
        "rss_series": {"t": ts, "mib": dict(samples.rss_mib)},
    }  # fmt: skip
    result.notes.append(
        "sustained = at the end of the step every group's lag is below "
        f"{SMALL_LAG_S:.0f} s of its own input rate, or over the step's second half it grows "
        f"by less than {GROWTH_LIMIT:.0%} of that rate per second and ends below "
        f"{BACKLOG_LIMIT_S:.0f} s of it"
    )
    if not m["settled"]:
        result.notes.append(
            f"the opening stock load had not drained when the first step began (every "
            f"group's lag below {SETTLED_LAG}), {m['settle_s']:.0f} s in"
        )
    if kind == "embedded":
        result.notes.append(
            "embedded broker: its high watermark is the last batch's base offset + 1, so lag "
            "reads low (negative values clamped to 0); growth still shows. A full run uses "
            "Apache Kafka for this figure (`--e2e-broker-kind kafka`)"
        )
    return result


def _per_second(ts: list[float], values: list[Any]) -> list[float | None]:
    out: list[float | None] = [None]
    for i in range(1, len(ts)):
        a, b = (
            values[i - 1] if i - 1 < len(values) else None,
            values[i] if i < len(values) else None,
        )
        dt = ts[i] - ts[i - 1]
        out.append((b - a) / dt if a is not None and b is not None and dt > 0 else None)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker-kind", choices=["embedded", "kafka"], default="kafka")
    parser.add_argument("--rates", default="250,500,1000,1500,2000,3000,5000")
    parser.add_argument("--step", type=float, default=60.0)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        logs = Path("artifacts/bench/e2e/logs")
        logs.mkdir(parents=True, exist_ok=True)
        m = run(
            args.broker_kind, [int(r) for r in args.rates.split(",")], args.step, Path(tmp),
            logs, QuietReporter(), fast_joins=args.broker_kind == "embedded",
        )  # fmt: skip
    for step in m["steps"]:
        print(f"{step['rate']:>6}/s sent {step['achieved']:>8,.0f}/s "
              f"{'sustained' if step['bounded'] else 'lag grows'}")  # fmt: skip
    for name, peak in sorted(m["peak_mib"].items()):
        print(f"peak RSS {name:<20} {peak:>8.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
