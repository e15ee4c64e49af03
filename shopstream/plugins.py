"""How roles plug into the core without the core importing them.

A role (``producers``, ``pipelines``, ``dashboard``) declares in ``pyproject.toml``:

* ``[project.entry-points."shopstream.commands"]`` - a :class:`click.Command`
  (or group) added to the ``shopstream`` CLI, e.g. ``produce = "producers.cli:produce"``.
* ``[project.entry-points."shopstream.up"]`` - an :data:`UpContribution`: a
  function of the settings returning the processes ``shopstream up`` starts,
  e.g. ``router = "pipelines.cli:up_processes"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

import click

from shopstream.settings import Settings

COMMANDS_GROUP = "shopstream.commands"
UP_GROUP = "shopstream.up"


@dataclass(frozen=True, slots=True)
class UpProcess:
    """One long-running process of ``shopstream up``: ``shopstream <argv...>``.

    ``order`` sorts start-up (lower first): consumers before producers, so the
    first events already find their readers.
    """

    name: str
    argv: tuple[str, ...]
    order: int = 50


UpContribution = Callable[[Settings], list[UpProcess]]


def load_commands() -> list[click.Command]:
    """Every CLI command that installed roles contribute, sorted by name."""
    commands = [ep.load() for ep in entry_points(group=COMMANDS_GROUP)]
    return sorted(commands, key=lambda c: c.name or "")


def load_up_processes(settings: Settings) -> list[UpProcess]:
    """Every process installed roles want ``shopstream up`` to run, in start order."""
    processes: list[UpProcess] = []
    for ep in sorted(entry_points(group=UP_GROUP), key=lambda e: e.name):
        contribute: UpContribution = ep.load()
        processes.extend(contribute(settings))
    return sorted(processes, key=lambda p: (p.order, p.name))
