"""Every stream-processing app of shopstream, by the name ``shopstream run NAME`` takes.

Values are ``"module:function"`` import paths of a ``run(settings) -> None``
function that builds the Quix Streams application and runs it until SIGINT or
SIGTERM. They are imported lazily so one app's imports never slow another.
"""

from __future__ import annotations

APPS: dict[str, str] = {}
"""name -> "module:function"; filled in by each pipeline module's author."""

UP_ORDER: dict[str, int] = {}
"""name -> start order in ``shopstream up`` (lower first; default 20)."""
