"""The fault-injection suite's profiles and figures (``tests/faults``).

``SHOPSTREAM_FAULTS`` picks the profile: ``quick`` (the default, what CI runs), ``full``
(issue 14's sizes, on demand) or ``off`` (the suite skips).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from support.notes import note


@dataclass(frozen=True, slots=True)
class Profile:
    """How hard the suite pushes (see the module docstring)."""

    name: str
    events: int
    """Traffic records the producer sends (faults included; the opening stock on top)."""
    rate: float
    """Records per second the producer sends them at."""
    kills_per_app: int
    fuzz_records: int
    """Records hypothesis draws for the router fuzzing (one batch, sent at once)."""
    outage_s: float
    """How long the killed broker stays down."""
    disk_orders: int
    """Orders per phase of the disk-full test (before, during, after)."""
    invalid_ratio: float = 0.02
    duplicate_ratio: float = 0.02
    late_ratio: float = 0.02


PROFILES = {
    "quick": Profile("quick", events=6_000, rate=300, kills_per_app=1, fuzz_records=300,
                     outage_s=8, disk_orders=1_000),
    "full": Profile("full", events=50_000, rate=500, kills_per_app=3, fuzz_records=3_000,
                    outage_s=30, disk_orders=5_000),
}  # fmt: skip


def profile() -> Profile:
    name = os.environ.get("SHOPSTREAM_FAULTS", "quick")
    if name == "off":
        pytest.skip("fault injection switched off (SHOPSTREAM_FAULTS=off)")
    if name not in PROFILES:
        raise pytest.UsageError(f"SHOPSTREAM_FAULTS={name!r}: choose quick, full or off")
    return PROFILES[name]


def report(test: str, line: str) -> None:
    """Note what ``test`` measured in the session's "Fault injection" section."""
    note("Fault injection", f"{test}: {line}")
