"""Core commands: ``broker``, ``topics``, ``schemas``, ``run``, ``up``."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from shopstream.admin import create_topics, topic_status
from shopstream.apps import app_names, get_app
from shopstream.brokers import BROKER_KINDS, BrokerKind, BrokerProcess, make_broker
from shopstream.errors import UserError
from shopstream.events import json_schemas
from shopstream.identity import LocalState, broker_identity
from shopstream.logs import configure_logging
from shopstream.records import record_schemas
from shopstream.settings import DEFAULT_BROKER_ADDRESS, Settings, get_settings
from shopstream.signals import STOP, note_early_stop
from shopstream.topics import ALL_TOPICS, Namespace

log = logging.getLogger("shopstream")
DEFAULT_PORT = int(DEFAULT_BROKER_ADDRESS.rsplit(":", 1)[1])


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def start_broker(
    kind: BrokerKind, port: int, log_dir: Path, data_dir: Path | None = None
) -> BrokerProcess:
    """Start a broker of ``kind`` on loopback ``port`` and log where it listens.

    The broker's own log goes to ``<log_dir>/broker-<kind>.log`` and outlives it.
    ``data_dir`` keeps a ``kafka`` broker's log directory there (durable).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"broker-{kind}.log"
    extra: dict[str, object] = {"data_dir": data_dir} if data_dir else {}
    if data_dir and kind == "embedded":
        raise UserError("the embedded broker keeps data in memory only - drop --data-dir")
    process = make_broker(kind, port=port, log_path=log_path, **extra)
    log.info("starting %s broker on 127.0.0.1:%d (log %s) ...", kind, port, log_path)
    process.start()
    log.info("%s", process.description)
    return process


kind_option = click.option(
    "--kind",
    type=click.Choice(BROKER_KINDS),
    default="embedded",
    show_default=True,
    help="embedded: Tansu, no Docker, memory only. kafka: Apache Kafka (needs Java).",
)


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@kind_option
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path),
    help="kafka only: keep the broker's log directory here (durable across restarts).",
)  # fmt: skip
def broker(port: int, kind: BrokerKind, data_dir: Path | None) -> None:
    """Run a local Kafka-API broker in the foreground until Ctrl-C."""
    configure_logging()
    process = start_broker(kind, port, Path(get_settings().data_dir) / "logs", data_dir)
    try:
        with stop_signals() as stop:
            while not stop.wait(0.5):
                if not process.alive:
                    raise UserError(f"the broker exited - see {process.log_path}")
    finally:
        log.info("stopping broker on %s", process.address)
        process.stop()


@click.group()
def topics() -> None:
    """Create and inspect the topic catalog on the broker."""


@topics.command("create")
def topics_create() -> None:
    """Create every catalog topic the broker lacks (idempotent)."""
    settings = get_settings()
    created = create_topics(settings)
    click.echo(
        f"{len(created)} topic(s) created, {len(ALL_TOPICS) - len(created)} already there "
        f"on {settings.broker_address}"
    )


@topics.command("list")
def topics_list() -> None:
    """Print every catalog topic and whether it exists on the broker."""
    from rich.console import Console
    from rich.table import Table

    settings = get_settings()
    table = Table(title=f"topics on {settings.broker_address}")
    for col in ("topic", "role", "partitions", "cleanup.policy", "retention.ms", "key", "exists"):
        table.add_column(col)
    for status in topic_status(settings):
        spec = status.spec
        exists = "yes" if status.exists else "no"
        expected = status.partitions
        if status.exists and not status.as_declared:
            exists = f"yes ({status.broker_partitions} partitions)"
        table.add_row(
            spec.name, spec.role, str(expected), spec.cleanup_policy,
            "forever" if spec.retention_ms < 0 else str(spec.retention_ms), spec.key, exists,
        )  # fmt: skip
    Console(width=140).print(table)


@click.group()
def schemas() -> None:
    """JSON Schema of every event type and every record the read side consumes."""


@schemas.command("export")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs/schemas"),
    show_default=True,
)  # fmt: skip
@click.option("--check", is_flag=True, help="Fail if the files differ instead of writing them.")
def schemas_export(out: Path, check: bool) -> None:
    """Write docs/schemas/<EventType>.json and docs/schemas/records/<Record>.json."""
    rendered = {
        path: json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for folder, schemas in ((out, json_schemas()), (out / "records", record_schemas()))
        for path, schema in ((folder / f"{name}.json", s) for name, s in schemas.items())
    }
    if check:
        stale = [str(p) for p, text in rendered.items() if not p.exists() or p.read_text() != text]
        if stale:
            raise UserError(
                f"schemas out of date: {', '.join(stale)} - run `shopstream schemas export`"
            )
        click.echo(f"{len(rendered)} schemas up to date in {out}")
        return
    for path, text in rendered.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    click.echo(f"{len(rendered)} schemas written to {out}")


def ensure_state_is_this_brokers(settings: Settings, *, move_stale: bool) -> None:
    """Check that ``<data_dir>/state`` belongs to the broker in ``settings``.

    State from another broker (a restarted embedded broker forgot every topic, the
    changelogs the stores were built from included) cannot be resumed: with
    ``move_stale`` it is moved aside with one log line, otherwise it is a
    :class:`UserError` that says how to fix it.
    """
    identity = broker_identity(settings)
    state = LocalState.of(settings)
    owner = state.owner()
    if state.belongs_to(identity):
        if owner is not None:
            log.info("state in %s is this broker's (%s)", state.root, identity)
        return
    if not move_stale:
        raise state.stale_error(identity, settings.broker_address)
    moved = state.move_aside()
    state.claim(identity)
    log.info(
        "state stores in %s belonged to broker %s, not to this one (%s): moved to %s",
        state.root, owner, identity.broker_id, moved,
    )  # fmt: skip


@click.command("run")
@click.argument("name", type=click.Choice(app_names()))
@click.option(
    "--namespace", default="", metavar="SUFFIX",
    help="Suffix every topic, group and app instance name (an isolated copy of the topology).",
)  # fmt: skip
def run(name: str, namespace: str) -> None:
    """Run the stream-processing app NAME until Ctrl-C or SIGTERM."""
    spec = get_app(name)
    if spec.run is None:
        raise UserError(f"{name} does not run this way - start it with "
                        f"`shopstream {' '.join(spec.command)}`")  # fmt: skip
    note_early_stop()  # a stop asked for while it gets ready ends it cleanly before it runs
    configure_logging()
    settings = get_settings()
    ensure_state_is_this_brokers(settings, move_stale=False)
    if not STOP.is_set():
        spec.run(settings, Namespace(namespace))
