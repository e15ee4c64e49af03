"""Core commands: ``broker``, ``topics``, ``schemas``, ``up``."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from shopstream.admin import create_topics, topic_status
from shopstream.brokers.base import BROKER_KINDS, BrokerKind, BrokerProcess, make_broker
from shopstream.errors import UserError
from shopstream.events import json_schemas
from shopstream.settings import DEFAULT_BROKER_ADDRESS, get_settings, load_settings
from shopstream.supervisor import Supervisor
from shopstream.topics import ALL_TOPICS

log = logging.getLogger("shopstream")
DEFAULT_PORT = int(DEFAULT_BROKER_ADDRESS.rsplit(":", 1)[1])


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def wait_for_stop_signal(timeout: float | None = None) -> None:
    """Block until SIGINT or SIGTERM (or ``timeout`` seconds)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait(timeout)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def start_broker(kind: BrokerKind, port: int, log_dir: Path) -> BrokerProcess:
    """Start a broker of ``kind`` on loopback ``port`` and log where it listens.

    The broker's own log goes to ``<log_dir>/broker-<kind>.log`` and outlives it.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"broker-{kind}.log"
    process = make_broker(kind, port=port, log_path=log_path)
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
def broker(port: int, kind: BrokerKind) -> None:
    """Run a local Kafka-API broker in the foreground until Ctrl-C."""
    configure_logging()
    process = start_broker(kind, port, Path(get_settings().data_dir) / "logs")
    try:
        wait_for_stop_signal()
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
        if status.exists and status.broker_partitions != spec.partitions:
            exists = f"yes ({status.broker_partitions} partitions)"
        table.add_row(
            spec.name, spec.role, str(spec.partitions), spec.cleanup_policy,
            "forever" if spec.retention_ms < 0 else str(spec.retention_ms), spec.key, exists,
        )  # fmt: skip
    Console(width=140).print(table)


@click.group()
def schemas() -> None:
    """JSON Schema of every event type."""


@schemas.command("export")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs/schemas"),
    show_default=True,
)  # fmt: skip
@click.option("--check", is_flag=True, help="Fail if the files differ instead of writing them.")
def schemas_export(out: Path, check: bool) -> None:
    """Write docs/schemas/<EventType>.json for every event type."""
    rendered = {
        out / f"{name}.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }
    if check:
        stale = [str(p) for p, text in rendered.items() if not p.exists() or p.read_text() != text]
        if stale:
            raise UserError(
                f"schemas out of date: {', '.join(stale)} - run `shopstream schemas export`"
            )
        click.echo(f"{len(rendered)} schemas up to date in {out}")
        return
    out.mkdir(parents=True, exist_ok=True)
    for path, text in rendered.items():
        path.write_text(text)
    click.echo(f"{len(rendered)} schemas written to {out}")


@click.command()
@click.option(
    "--broker", "broker_address", metavar="HOST:PORT",
    help="Use this running broker (e.g. Redpanda) instead of starting the embedded one.",
)  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port of the embedded broker.")  # fmt: skip
@click.option("--without", multiple=True, metavar="NAME", help="Do not start this process.")
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds.")
def up(
    broker_address: str | None, port: int, without: tuple[str, ...], duration: float | None
) -> None:
    """Start everything: broker (unless --broker), topics, then every role's processes."""
    configure_logging()
    settings = get_settings()
    process: BrokerProcess | None = None
    if broker_address:
        settings = load_settings(base=settings, broker_address=broker_address)
    else:
        process = start_broker("embedded", port, Path(settings.data_dir) / "logs")
        settings = load_settings(base=settings, broker_address=process.address)
    try:
        created = create_topics(settings)
        already = len(ALL_TOPICS) - len(created)
        log.info("topics: %d created, %d already there", len(created), already)
        with Supervisor(settings, skip=set(without)) as supervisor:
            supervisor.start_all()
            wait_for_stop_signal(duration)
    finally:
        if process is not None:
            log.info("stopping the embedded broker (its data is gone with it)")
            process.stop()
