"""The app registry: every process shopstream runs, declared once, and the groups it implies.

Roles declare their apps in ``pyproject.toml`` and the core never imports a role::

    [project.entry-points."shopstream.apps"]
    router = "pipelines.router:APP"

Each value is an :class:`AppSpec`. Everything that needs to know the apps reads this
registry: ``shopstream run NAME`` (the app's ``run`` function), ``shopstream up`` (which
processes to start, in which order), the consumer-group catalog
(:func:`consumer_groups`, derived from what each app declares it reads and writes), the
compose file (a test keeps it in step), the dashboard's topology map and the tests.
Adding an app is one entry point and one ``AppSpec``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal

from shopstream.errors import UserError
from shopstream.settings import Settings
from shopstream.topics import Namespace

APPS_GROUP = "shopstream.apps"
"""Entry-point group of :class:`AppSpec` objects."""
COMMANDS_GROUP = "shopstream.commands"
"""Entry-point group of :class:`click.Command` objects added to the ``shopstream`` CLI."""

AppKind = Literal["producer", "processor", "sink", "dashboard"]
Target = Literal["up", "compose"]
RunFunction = Callable[[Settings, Namespace], None]
"""Builds an app and runs it until SIGINT/SIGTERM (``shopstream run NAME``)."""
BuildFunction = Callable[[Settings, Namespace], Any]
"""Builds a processor's stream-processing app without running it (topics must exist):
what tests inspect to check that an app reads and writes what it declares."""


@dataclass(frozen=True, slots=True)
class AppSpec:
    """One process of shopstream: what it is, how it starts, what it reads and writes.

    ``reads`` and ``writes`` are catalog topic names; a test builds each processor app
    and checks them against the topics the built app really consumes and produces.
    ``group`` is the consumer group of an app that consumes with one (not producers,
    not the dashboard). ``order`` sorts start-up in ``shopstream up`` (lower first:
    consumers before producers, so the first events already find their readers).
    ``scalable``: replicas of this app share the work up to the partition count (a
    consumer group); ``False`` for apps that must run once.
    """

    name: str
    kind: AppKind
    description: str
    run: RunFunction | None = None
    build: BuildFunction | None = None
    argv: tuple[str, ...] = ()
    """The ``shopstream`` command line that starts it; default ``run NAME``."""
    group: str | None = None
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    order: int = 50
    scalable: bool = True
    targets: frozenset[Target] = frozenset({"up", "compose"})
    port: int | None = None
    """A TCP port it serves (the dashboard)."""

    @property
    def command(self) -> tuple[str, ...]:
        return self.argv or ("run", self.name)


@dataclass(frozen=True, slots=True)
class ConsumerGroup:
    """A consumer group: who reads what. One group per service is pub/sub fan-out."""

    name: str
    app: str
    reads: tuple[str, ...]
    writes: tuple[str, ...] = field(default=())
    description: str = ""


@cache
def load_apps() -> Mapping[str, AppSpec]:
    """Every app the installed roles declare, by name (imports each role once)."""
    apps: dict[str, AppSpec] = {}
    for ep in sorted(entry_points(group=APPS_GROUP), key=lambda e: e.name):
        spec = ep.load()
        if not isinstance(spec, AppSpec) or spec.name != ep.name:
            raise TypeError(f"entry point {ep.name} = {ep.value} is not an AppSpec named so")
        apps[spec.name] = spec
    return apps


def app_names() -> list[str]:
    """The registered app names, without importing any role."""
    return sorted(ep.name for ep in entry_points(group=APPS_GROUP))


def get_app(name: str) -> AppSpec:
    """The app called ``name``; :class:`UserError` naming the known ones otherwise."""
    apps = load_apps()
    if name not in apps:
        raise UserError(f"no app named {name!r} - use one of {', '.join(sorted(apps))}")
    return apps[name]


def apps_for(target: Target) -> list[AppSpec]:
    """The apps ``target`` runs, in start order."""
    chosen = [a for a in load_apps().values() if target in a.targets]
    return sorted(chosen, key=lambda a: (a.order, a.name))


def consumer_groups() -> list[ConsumerGroup]:
    """The consumer-group catalog: one group per consuming app, as the app declares it."""
    return [
        ConsumerGroup(a.group, a.name, a.reads, a.writes, a.description)
        for a in sorted(load_apps().values(), key=lambda a: (a.order, a.name))
        if a.group is not None
    ]


def load_commands() -> list[object]:
    """Every CLI command the installed roles contribute, sorted by name."""
    commands = [ep.load() for ep in entry_points(group=COMMANDS_GROUP)]
    return sorted(commands, key=lambda c: getattr(c, "name", "") or "")
