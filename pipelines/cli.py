"""``shopstream run NAME``: run one stream-processing app in the foreground."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import click

from pipelines.registry import APPS, UP_ORDER
from shopstream.plugins import UpProcess
from shopstream.settings import Settings, get_settings

RunFunction = Callable[[Settings], None]


def resolve(name: str) -> RunFunction:
    module_name, _, func = APPS[name].partition(":")
    return getattr(importlib.import_module(module_name), func)  # type: ignore[no-any-return]


@click.command("run")
@click.argument("name", type=click.Choice(sorted(APPS)) if APPS else str)
def run(name: str) -> None:
    """Run the stream-processing app NAME until Ctrl-C or SIGTERM."""
    resolve(name)(get_settings())


def up_processes(settings: Settings) -> list[UpProcess]:
    """Every pipeline app, for ``shopstream up``."""
    return [UpProcess(name, ("run", name), UP_ORDER.get(name, 20)) for name in sorted(APPS)]
