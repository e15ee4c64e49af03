"""Private Quix Streams behaviour that needs a broker to observe (see test_quix_internals)."""

from __future__ import annotations

from pathlib import Path

from pipelines.runtime.quix import input_topic, quix_app
from shopstream.admin import create_topics
from shopstream.settings import Settings
from shopstream.topics import ORDERS, RETURNS, Namespace


def test_concat_sets_the_private_time_alignment_flag_analytics_turns_off(
    settings: Settings, tmp_path: Path
) -> None:
    # pipelines/analytics/app.py switches this flag off; if a release renames or drops it,
    # the app would silently consume time-aligned again (about 6x slower).
    ns = Namespace(tmp_path.name[-8:])
    specs = ns.topics([ORDERS, RETURNS])
    create_topics(settings, specs)
    app = quix_app(settings, "quix-internals", "quix-internals")
    a, b = (app.dataframe(input_topic(app, spec)) for spec in specs)
    registry = getattr(a.concat(b), "_registry", None)
    assert registry is not None, "StreamingDataFrame._registry is gone"
    assert getattr(registry, "_requires_time_alignment", None) is True
