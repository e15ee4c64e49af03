"""The benchmark report: ``report.md`` (one table per stage), ``report.json`` (every figure
with its baseline, ratio and target, plus each stage's details) and PNG plots (the
end-to-end run's throughput and lag over time and the processes' memory, the freshness
distribution)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks.common import Figure, Sizes, StageResult, machine


def _number(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("ms", "s") or abs(value) < 100:
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    else:
        text = f"{value:,.0f}"
    return f"{text} {unit}".strip()


def _met(figure: Figure) -> str:
    met = figure.met
    return "" if met is None else ("yes" if met else "**no**")


def markdown(
    results: list[StageResult], *, mode: str, started_at: datetime, seconds: float,
    broker_kind: str, e2e_broker_kind: str, host: dict[str, Any],
) -> str:  # fmt: skip
    lines = [
        f"# shopstream bench ({mode})",
        "",
        f"{started_at:%Y-%m-%d %H:%M} UTC, {seconds:.0f} s; **{host['cores']} cores**, "
        f"{host['memory_gib']} GiB, {host['system']}, Python {host['python']}; load average "
        f"at the start {', '.join(f'{x:.1f}' for x in host['load_average'])}; "
        f"broker: {broker_kind} (end to end: {e2e_broker_kind}).",
        "",
    ]
    if mode == "quick":
        lines += ["> **Quick run**: small sizes and short steps, a smoke test. The figures are "
                  "noisy and not comparable with a full run's.", ""]  # fmt: skip
    lines += [
        "Every figure stands next to its baseline, measured in the same run; ratio = "
        "figure / baseline.",
        "",
    ]
    for result in results:
        lines += [f"## {result.title}", ""]
        if result.error:
            lines += [f"**Failed**: `{result.error}`", ""]
            continue
        lines += [
            "| figure | value | baseline | baseline value | ratio | target | met |",
            "|---|---:|---|---:|---:|---|---|",
        ]
        for f in result.figures:
            ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
            target = f.target.describe(f.unit) if f.target else ""
            lines.append(
                f"| {f.label} | {_number(f.value, f.unit)} | {f.baseline_label or ''} | "
                f"{_number(f.baseline_value, f.unit) if f.baseline_value is not None else ''} "
                f"| {ratio} | {target} | {_met(f)} |"
            )
        notes = [f"{f.label}: {f.note}" for f in result.figures if f.note] + result.notes
        if notes:
            lines.append("")
            lines += [f"- {note}" for note in notes]
        for plot in result.details.get("plots", []):
            lines += ["", f"![{Path(plot).stem}]({Path(plot).name})"]
        lines += ["", f"<sub>{result.seconds:.0f} s</sub>", ""]
    return "\n".join(lines) + "\n"


def console_table(results: list[StageResult]) -> Table:
    table = Table(title="shopstream bench")
    for column, justify in (("figure", "left"), ("value", "right"), ("baseline", "right"),
                            ("ratio", "right"), ("target", "left")):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for result in results:
        if result.error:
            table.add_row(f"[red]{result.name} failed[/red]", "", "", "", result.error[:60])
            continue
        for f in result.figures:
            met = f.met
            target = "" if f.target is None else f.target.describe(f.unit)
            if met is not None:
                target = f"[{'green' if met else 'red'}]{target}[/]"
            table.add_row(
                f.label, _number(f.value, f.unit),
                _number(f.baseline_value, f.unit) if f.baseline_value is not None else "",
                f"{f.ratio:.2f}x" if f.ratio is not None else "", target,
            )  # fmt: skip
    return table


def write(
    results: list[StageResult], out: Path, *, mode: str, started_at: datetime, seconds: float,
    broker_kind: str, e2e_broker_kind: str, sizes: Sizes,
) -> list[Path]:  # fmt: skip
    """Write the report into ``out``; return the paths written."""
    host = machine()
    plots = _plots(results, out)
    doc = {
        "mode": mode, "started_at": started_at.isoformat(), "seconds": round(seconds, 1),
        "machine": host, "broker": broker_kind, "e2e_broker": e2e_broker_kind,
        "sizes": asdict(sizes),
        "figures": {f.key: f.as_dict() for r in results for f in r.figures},
        "stages": [r.as_dict() for r in results],
    }  # fmt: skip
    json_path = out / "report.json"
    json_path.write_text(json.dumps(_clean(doc), indent=1, default=_plain, allow_nan=False))
    md_path = out / "report.md"
    md_path.write_text(markdown(results, mode=mode, started_at=started_at, seconds=seconds,
                                broker_kind=broker_kind, e2e_broker_kind=e2e_broker_kind,
                                host=host))  # fmt: skip
    return [md_path, json_path, *plots]


def _clean(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (JSON has neither) and keys as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Path | datetime):
        return str(value)
    return repr(value)


def _plots(results: list[StageResult], out: Path) -> list[Path]:
    """PNGs from the details stages leave for them (``series``, ``samples``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # a dev dependency: no plots without it
        return []
    written: list[Path] = []
    for result in results:
        if result.error:
            continue
        if result.name == "e2e" and result.details.get("series"):
            written.append(_plot_e2e(plt, result, out / "e2e_throughput_lag.png"))
            if result.details.get("rss_series"):
                written.append(_plot_rss(plt, result, out / "e2e_rss.png"))
        if result.name == "freshness" and result.details.get("samples"):
            written.append(_plot_freshness(plt, result, out / "freshness.png"))
    return written


def _plot_e2e(plt: Any, result: StageResult, path: Path) -> Path:
    series = result.details["series"]
    t = series["t"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    top.plot(t, series["produced_per_s"], label="producer (sent/s)", color="black", lw=2)
    for app, values in series["consumed_per_s"].items():
        top.plot(t, values, label=f"{app} in/s", lw=1)
    top.set_ylabel("events/s")
    top.legend(fontsize=7, ncol=3)
    top.grid(alpha=0.3)
    for group, values in series["lag"].items():
        bottom.plot(t, values, label=group, lw=1)
    bottom.set_ylabel("lag (records)")
    bottom.set_xlabel("seconds")
    bottom.legend(fontsize=7, ncol=3)
    bottom.grid(alpha=0.3)
    for step in result.details.get("steps", []):
        for axis in (top, bottom):
            axis.axvline(step["start_s"], color="grey", ls=":", lw=0.8)
        top.annotate(f"{step['rate']}/s", (step["start_s"], top.get_ylim()[1] * 0.95),
                     fontsize=7)  # fmt: skip
    fig.suptitle(f"end to end: throughput and consumer lag ({result.details.get('broker')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    result.details.setdefault("plots", []).append(str(path))
    return path


def _plot_rss(plt: Any, result: StageResult, path: Path) -> Path:
    series = result.details["rss_series"]
    fig, axis = plt.subplots(figsize=(10, 4))
    for app, values in series["mib"].items():
        axis.plot(series["t"], values, label=app, lw=2 if app == "sink" else 1)
    axis.set_ylabel("RSS (MiB)")
    axis.set_xlabel("seconds")
    axis.legend(fontsize=7, ncol=4)
    axis.grid(alpha=0.3)
    fig.suptitle("end to end: resident memory per process")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    result.details.setdefault("plots", []).append(str(path))
    return path


def _plot_freshness(plt: Any, result: StageResult, path: Path) -> Path:
    samples: dict[str, list[float]] = result.details["samples"]
    fig, axis = plt.subplots(figsize=(10, 4.5))
    for label, values in samples.items():
        if not values:
            continue
        ordered = sorted(values)
        n = len(ordered)
        axis.plot(ordered, [(i + 1) / n for i in range(n)], label=f"{label} (n={n})")
    axis.axvline(1000, color="green", ls="--", lw=0.8, label="goal p95 1 s")
    axis.axvline(2000, color="red", ls="--", lw=0.8, label="bar 2 s")
    axis.set_xlabel("produced -> visible to a dashboard query (ms)")
    axis.set_ylabel("share of probe orders")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    fig.suptitle("freshness through router and sink (cumulative distribution)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    result.details.setdefault("plots", []).append(str(path))
    return path
