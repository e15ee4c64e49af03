"""``python -m pipelines.services NAME [--namespace SUFFIX]``: run one app, maybe isolated.

The same apps as ``shopstream run NAME``, with one addition for tests and side-by-side
demos on a shared broker: ``--namespace`` suffixes every topic, group and app instance
name (``orders`` -> ``orders-SUFFIX``), so the copy touches nothing of the real topology.
"""

from __future__ import annotations

import click

from pipelines.router import run as run_router
from pipelines.services.apps import SERVICES
from pipelines.services.runtime import Namespace, run_service
from shopstream.settings import get_settings

NAMES = ("router", *SERVICES)


@click.command()
@click.argument("name", type=click.Choice(NAMES))
@click.option("--namespace", default="", help="suffix for every topic, group and app name")
def main(name: str, namespace: str) -> None:
    """Run the app NAME until SIGINT or SIGTERM."""
    settings = get_settings()
    ns = Namespace(namespace)
    if name == "router":
        run_router(settings, ns)
    else:
        run_service(settings, SERVICES[name], ns)


if __name__ == "__main__":
    main()
