"""Figures a test run reports at its end, in sections of the terminal summary.

A test (or a fixture) calls :func:`note`; ``tests/conftest.py`` prints every note once the
session ends - under ``pytest -n`` too, where each worker hands its notes to the
controller (xdist's ``workeroutput``), since only the controller writes the summary.
"""

from __future__ import annotations

NOTES: list[tuple[str, str]] = []
"""(section, line) in the order they were noted."""


def note(section: str, line: str) -> None:
    NOTES.append((section, line))
    print(f"\n{section}: {line}")  # in the test's captured output too
