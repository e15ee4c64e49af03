"""``shopstream replay``: rebuild the order history from offset zero and compare it with the
live read models (see :mod:`pipelines.replay.engine`).

``replay start NAME`` plans (or resumes) and runs a replay with a progress bar per
partition, then compares; ``replay compare NAME`` compares again; ``replay list`` and
``replay drop NAME`` manage the models. Exit code 1 when the rebuilt model differs.
"""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime
from types import FrameType

import click
import duckdb
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipelines.replay import engine
from pipelines.runtime.memory import use_jemalloc_for_arrow
from readmodels.lake import connect
from readmodels.transactions import error_line
from shopstream.errors import UserError
from shopstream.logs import configure_logging
from shopstream.settings import get_settings
from shopstream.topics import Namespace

NAME_PATTERN = r"^[a-z0-9_]{1,40}$"


def _name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise click.BadParameter(f"{value!r} - use 1-40 of a-z, 0-9 and _", ctx, param)
    return value


def _time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not ISO 8601, e.g. 2026-12-01T18:00Z") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@click.group("replay")
def replay() -> None:
    """Rebuild the order history from the log into a fresh model and compare with the live one."""


@replay.command("start")
@click.argument("name", callback=_name)
@click.option("--topic", "topics", multiple=True, type=click.Choice(engine.REPLAYABLE),
              default=("orders",), show_default=True, help="History topics to replay.")  # fmt: skip
@click.option("--from-time", callback=_time, help="Start at the offsets for this time (ISO).")
@click.option("--no-compare", is_flag=True, help="Read to the end instead of to the live "
              "model's offsets, and do not compare.")  # fmt: skip
@click.option("--plain", is_flag=True, help="A line per second instead of progress bars.")
@click.option("--namespace", default="", metavar="SUFFIX",
              help="Replay an isolated copy of the topology (see `shopstream run`).")  # fmt: skip
def start(
    name: str,
    topics: tuple[str, ...],
    from_time: datetime | None,
    no_compare: bool,
    plain: bool,
    namespace: str,
) -> None:
    """Start (or resume) replay NAME: a new consumer group reads from offset zero."""
    configure_logging()
    settings = get_settings()
    use_jemalloc_for_arrow()  # its reader thread makes the batches, this one frees them
    con = connect(settings, read_only=False)
    plan = engine.registered(con, name)
    console = Console(stderr=True)
    if plan is None:
        plan = engine.plan(
            settings, con, name, topics, from_time, compare_with_live=not no_compare,
            namespace=Namespace(namespace),
        )  # fmt: skip
        try:
            engine.create_model(con, plan)
        except (duckdb.Error, TimeoutError) as exc:  # all or nothing: nothing was created
            raise UserError(
                f"replay {name}: could not create its model in the lake ({error_line(exc)}); "
                "nothing was written - start it again"
            ) from None
        where = f"live snapshot {plan.live_snapshot}" if plan.live_snapshot else "the end"
        console.print(f"replay {name}: {', '.join(plan.topics)} from "
                      f"{'offset 0' if from_time is None else from_time.isoformat()} to {where}, "
                      f"as group {plan.group}, into lake.{plan.schema}")  # fmt: skip
    else:
        console.print(f"replay {name}: resuming (its model keeps what it wrote)")
    run = engine.Replay(settings, con, plan)

    def stop(signum: int, frame: FrameType | None) -> None:
        run.stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    if plain or not console.is_terminal:
        last = [0.0]

        def line(progress: engine.Progress) -> None:
            if progress.updated_at - last[0] >= 1.0 or progress.state != "running":
                last[0] = progress.updated_at
                console.print(f"replay {name}: {progress.events:,} events, "
                              f"{progress.rate:,.0f}/s, {progress.remaining:,} to go")  # fmt: skip

        run.on_progress = line
        result = run.run()
    else:
        result = _with_bars(run, console)
    console.print(f"replay {name}: {result.state}, {result.events:,} events at "
                  f"{result.rate:,.0f} events/s")  # fmt: skip
    if result.state == "stopped":
        console.print(f"resume with `shopstream replay start {name}`")
        return
    if plan.live_snapshot is not None:
        _print_comparison(console, name, engine.compare(con, name))


def _with_bars(run: engine.Replay, console: Console) -> engine.Progress:
    bars = Progress(
        TextColumn("{task.description}"), BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"), TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(), console=console,
    )  # fmt: skip
    tasks: dict[tuple[str, int], TaskID] = {}

    def update(progress: engine.Progress) -> None:
        for part in progress.partitions:
            key = (part.topic, part.partition)
            if key not in tasks:
                label = f"{part.topic}[{part.partition}] (high watermark {part.high_watermark:,})"
                tasks[key] = bars.add_task(label, total=max(part.target - part.start, 0), rate="")
            bars.update(tasks[key], completed=max(part.position - part.start, 0),
                        rate=f"{progress.rate:,.0f} ev/s")  # fmt: skip

    run.on_progress = update
    with bars:
        return run.run()


def _print_comparison(console: Console, name: str, results: list[engine.TableComparison]) -> None:
    table = Table(title=f"replay {name} against the live model at the same offsets")
    for col in ("table", "replay rows", "live rows", "only in replay", "only in live", ""):
        table.add_column(col)
    for r in results:
        table.add_row(r.table, f"{r.replay_rows:,}", f"{r.live_rows:,}", str(r.only_in_replay),
                      str(r.only_in_live), "equal" if r.equal else "DIFFERENT")  # fmt: skip
    console.print(table)
    for r in results:
        for sample in r.samples:
            console.print(f"  {r.table}: {sample}")
    if not all(r.equal for r in results):
        raise click.exceptions.Exit(1)


@replay.command("compare")
@click.argument("name", callback=_name)
def compare_command(name: str) -> None:
    """Compare replay NAME's model with the live model at the same offsets."""
    con = connect(get_settings(), read_only=False)
    _print_comparison(Console(), name, engine.compare(con, name))


@replay.command("list")
def list_command() -> None:
    """Every replay model in the read models."""
    con = connect(get_settings(), read_only=False)
    table = Table(title="replays")
    for col in ("name", "topics", "live snapshot", "started", "finished", "events", "seconds"):
        table.add_column(col)
    for row in engine.replays(con):
        table.add_row(*[str(row[k]) if row[k] is not None else "-" for k in row])
    Console().print(table)


@replay.command("drop")
@click.argument("name", callback=_name)
def drop_command(name: str) -> None:
    """Drop replay NAME: its model, consumer group and progress."""
    settings = get_settings()
    if not engine.drop(settings, connect(settings, read_only=False), name):
        raise UserError(f"no replay named {name!r} - see `shopstream replay list`")
    click.echo(f"replay {name} dropped")
