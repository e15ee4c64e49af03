"""The registry tells the truth (every lane): each processor, built as it runs, consumes
exactly the topics it declares and produces to exactly those it declares - so the
consumer-group catalog derived from the declarations is the running topology."""

from __future__ import annotations

import pytest

from shopstream.admin import create_topics
from shopstream.apps import load_apps
from shopstream.settings import Settings
from shopstream.topics import ALL_TOPICS, Namespace

PROCESSORS = sorted(name for name, app in load_apps().items() if app.build is not None)


@pytest.mark.parametrize("name", PROCESSORS)
def test_a_built_app_reads_and_writes_what_it_declares(
    settings: Settings, namespace: Namespace, name: str
) -> None:
    app = load_apps()[name]
    assert app.build is not None
    create_topics(settings, namespace.topics(ALL_TOPICS))
    built = app.build(settings, namespace)
    quix = built.app
    # Quix internals, read-only: what the built app subscribes to and declared.
    consumed = {t.name for t in quix._dataframe_registry.consumer_topics}
    repartitions = set(quix._topic_manager.repartition_topics)
    declared = set(quix._topic_manager.topics) - repartitions
    reads = {namespace.name(n) for n in app.reads}
    writes = {namespace.name(n) for n in app.writes}
    assert consumed - repartitions == reads, name
    # Everything else the app declared is an output (a topic may be both: analytics reads
    # the ticks its ticker writes).
    assert declared == reads | writes and declared - reads == writes - reads, name


def test_the_group_catalog_covers_every_consuming_app() -> None:
    groups = {a.group for a in load_apps().values() if a.group}
    assert {load_apps()[n].group for n in PROCESSORS} <= groups
