"""``shopstream dashboard``: serve the Streamlit dashboard (and its registry entry for ``up``).

Runs ``streamlit run dashboard/app.py`` headless on 127.0.0.1 (a dashboard is not exposed
beyond this machine unless ``--address`` says so), publishes its URL as the process status
(``shopstream up`` prints it), and stops Streamlit on SIGINT/SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import click

from shopstream.apps import AppSpec
from shopstream.brokers.base import port_in_use
from shopstream.errors import UserError
from shopstream.settings import get_settings, settings_env
from shopstream.status import StatusPublisher

APP_FILE = Path(__file__).with_name("app.py")
DEFAULT_PORT = 8501


@click.command("dashboard")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port to serve on (default SHOPSTREAM_DASHBOARD_PORT, 8501).")  # fmt: skip
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 in a container).")  # fmt: skip
def dashboard(port: int | None, address: str) -> None:
    """Serve the live dashboard until Ctrl-C or SIGTERM."""
    settings = get_settings()
    port = port or settings.dashboard_port
    if port_in_use("127.0.0.1", port):
        raise UserError(f"port {port} is already in use - stop what listens there or use --port")
    url = f"http://{'127.0.0.1' if address in ('0.0.0.0', '') else address}:{port}"
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP_FILE),
        "--server.headless", "true", "--server.address", address, "--server.port", str(port),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip
    child = subprocess.Popen(command, env=settings_env(settings))
    click.echo(f"dashboard: {url}", err=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def refresh(status: object) -> None:
        status.url = url  # type: ignore[attr-defined]

    with StatusPublisher(settings, "dashboard", refresh):
        code = child.wait()
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise click.exceptions.Exit(code)


DASHBOARD_APP = AppSpec(
    name="dashboard",
    kind="dashboard",
    description="The live dashboard in the browser: shop, inventory, customers, order "
    "traces, pipeline health, replay",
    argv=("dashboard",),
    port=DEFAULT_PORT,
    # After everything else: it reads what the others write.
    order=95,
    scalable=False,
)
