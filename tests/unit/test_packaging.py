"""Packaging, the app registry and deployment files stay consistent with the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from shopstream.apps import (
    APPS_GROUP,
    COMMANDS_GROUP,
    app_names,
    apps_for,
    consumer_groups,
    load_apps,
    load_commands,
)
from shopstream.topics import TOPICS_BY_NAME

REPO = Path(__file__).resolve().parents[2]


def test_core_imports_no_role() -> None:
    # The core is shared by every role; a role import would turn the layering upside down.
    roles = ("producers", "pipelines", "dashboard")
    for path in (REPO / "shopstream").rglob("*.py"):
        text = path.read_text()
        for role in roles:
            assert f"import {role}" not in text and f"from {role}" not in text, path


def test_role_commands_and_apps_are_registered_through_entry_points() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][COMMANDS_GROUP]
    assert {getattr(c, "name", None) for c in load_commands()} >= set(declared)
    assert set(project["entry-points"][APPS_GROUP]) == set(load_apps()) == set(app_names())


def test_registry_names_every_resource_once() -> None:
    apps = load_apps()
    groups = [g.name for g in consumer_groups()]
    assert len(groups) == len(set(groups))
    for app in apps.values():
        assert set(app.reads) | set(app.writes) <= set(TOPICS_BY_NAME), app.name
        assert (app.group is None) == (app.kind in {"producer", "dashboard"}), app.name
        assert app.run is not None or app.argv, app.name


def test_every_processor_is_run_by_up_after_its_upstream_and_before_the_producer() -> None:
    up = apps_for("up")
    order = {a.name: a.order for a in up}
    producers = [a for a in up if a.kind == "producer"]
    consumers = [a for a in up if a.kind in ("processor", "sink")]
    assert producers and all(p.order > a.order for p in producers for a in consumers)
    processors = {"router", "stock", "finance", "customer-relations", "notifications"}
    assert processors | {"analytics"} <= set(order)


@pytest.mark.parametrize("profile", [None, "dev", "cluster", "secure", "lake"])
def test_compose_file_is_valid(profile: str | None) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose must be installed under CI (scripts/test.sh does it)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    selected = ["--profile", profile] if profile else []
    result = subprocess.run(
        [tool, "-f", str(REPO / "compose.yaml"), *selected, "config", "-q"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
