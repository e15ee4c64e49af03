"""Packaging and deployment files stay consistent with the code."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from shopstream.plugins import COMMANDS_GROUP, UP_GROUP, load_commands

REPO = Path(__file__).resolve().parents[2]


def test_core_imports_no_role() -> None:
    # The core is shared by every role; a role import would turn the layering upside down.
    roles = ("producers", "pipelines", "dashboard")
    for path in (REPO / "shopstream").rglob("*.py"):
        text = path.read_text()
        for role in roles:
            assert f"import {role}" not in text and f"from {role}" not in text, path


def test_role_commands_are_registered_through_entry_points() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][COMMANDS_GROUP]
    assert {c.name for c in load_commands()} >= set(declared)
    assert UP_GROUP in project["entry-points"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO / "compose.yaml"), "config", "-q"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
