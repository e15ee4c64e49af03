"""``shopstream up``: the whole shop on one machine - broker, topics, every app.

Start-up, in order:

1. the embedded broker (unless ``--broker`` names a running one);
2. the catalog's topics (idempotent);
3. the broker's identity, and the local state checked against it: state stores of a
   broker that is gone (a restarted embedded broker forgot everything) are moved
   aside with one log line, state of this broker is resumed;
4. every app of the registry that ``up`` runs, consumers before producers.

Then a live status table (or, with ``--plain`` or a non-terminal output, plain log
lines) until Ctrl-C, SIGTERM or ``--duration``. If the embedded broker dies, ``up``
says so and exits with code 1: its data is gone and the apps cannot recover it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import click
from rich.console import Console
from rich.live import Live

from shopstream.admin import create_topics
from shopstream.apps import AppSpec, apps_for
from shopstream.brokers import BrokerProcess
from shopstream.cli.board import StatusBoard
from shopstream.cli.core import (
    DEFAULT_PORT,
    ensure_state_is_this_brokers,
    start_broker,
    stop_signals,
)
from shopstream.errors import UserError
from shopstream.kafka import fetch_metadata
from shopstream.logs import configure_logging
from shopstream.settings import Settings, get_settings, load_settings
from shopstream.supervisor import BROKER_DIED, Supervisor
from shopstream.topics import ALL_TOPICS

log = logging.getLogger("shopstream")


def _urls(apps: list[AppSpec], settings: Settings) -> dict[str, str]:
    """Where the apps that serve something listen (the dashboard, on its setting's port)."""
    return {
        a.name: f"http://127.0.0.1:{settings.dashboard_port if a.kind == 'dashboard' else a.port}"
        for a in apps
        if a.port
    }


@click.command()
@click.option(
    "--broker", "broker_address", metavar="HOST:PORT",
    help="Use this running broker (e.g. Redpanda) instead of starting the embedded one.",
)  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port of the embedded broker.")  # fmt: skip
@click.option("--without", multiple=True, metavar="NAME", help="Do not start this app.")
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.option("--plain", is_flag=True, help="Plain log lines instead of the live status table.")
def up(
    broker_address: str | None,
    port: int,
    without: tuple[str, ...],
    duration: float | None,
    plain: bool,
) -> None:
    """Start everything: broker (unless --broker), topics, then every app."""
    # Until the supervisor waits for it, SIGTERM must still unwind (and stop the broker).
    signal.signal(signal.SIGTERM, _interrupt)
    configure_logging()
    settings = get_settings()
    apps = [a for a in apps_for("up") if a.name not in without]
    unknown = set(without) - {a.name for a in apps_for("up")}
    if unknown:
        raise UserError(f"--without {', '.join(sorted(unknown))}: no such app in `up`")
    broker: BrokerProcess | None = None
    if broker_address:
        settings = load_settings(base=settings, broker_address=broker_address)
        fetch_metadata(settings)
    else:
        broker = start_broker("embedded", port, Path(settings.data_dir) / "logs")
        settings = load_settings(base=settings, broker_address=broker.address)
    try:
        created = create_topics(settings)
        already = len(ALL_TOPICS) - len(created)
        log.info("topics: %d created, %d already there", len(created), already)
        ensure_state_is_this_brokers(settings, move_stale=True)
        with Supervisor(settings, apps, broker) as supervisor, stop_signals() as stop:
            supervisor.start_all()
            for name, url in _urls(apps, settings).items():
                log.info("%s: %s", name, url)
            live = not plain and sys.stdout.isatty()
            board = StatusBoard(supervisor, settings.broker_address, _urls(apps, settings))
            ended = _wait(supervisor, stop, duration, board if live else None)
        if ended == BROKER_DIED:
            where = broker.log_path if broker else None
            raise click.ClickException(
                f"the embedded broker died (its data is gone with it; log: {where}) - "
                f"run `shopstream up` again to start afresh"
            )
    finally:
        if broker is not None:
            log.info("stopping the embedded broker (its data is gone with it)")
            broker.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _wait(
    supervisor: Supervisor,
    stop: threading.Event,
    duration: float | None,
    board: StatusBoard | None,
) -> str | None:
    """Until a stop signal, ``duration`` or the supervisor ending; return why it ended."""
    deadline = time.monotonic() + duration if duration is not None else None

    def done() -> bool:
        expired = deadline is not None and time.monotonic() >= deadline
        return stop.is_set() or expired or supervisor.end_reason is not None

    if board is None:
        while not done():
            supervisor.wait(0.5)
        return supervisor.end_reason
    with Live(get_renderable=board.render, console=Console(), refresh_per_second=1):
        while not done():
            supervisor.wait(0.5)
    return supervisor.end_reason
