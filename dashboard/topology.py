"""The live topology: what runs, what it reads and writes, how fast, how far behind.

Built from the app registry (:mod:`shopstream.apps`: each app's declared topics), the
topic catalog, the broker (high watermarks and consumer-group offsets) and what each
process publishes about itself (:mod:`shopstream.status`). :func:`topology` returns plain
nodes and edges laid out left to right in the order events flow (producers, ingress
topics, router, typed topics, services, their topics, the sink, the read models); the
dashboard draws it and the tests check it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from shopstream.apps import AppSpec, load_apps
from shopstream.kafka import fetch_metadata, make_admin, make_consumer
from shopstream.settings import Settings
from shopstream.status import ProcessStatus, read_statuses, run_dir
from shopstream.topics import TICKS, TOPICS_BY_NAME

NodeKind = Literal["producer", "processor", "sink", "dashboard", "topic", "store"]
READ_MODELS = "read models (DuckLake)"
STALE_S = 5.0
HIDDEN = {TICKS.name}
"""Topics left off the map: analytics' clock ticks loop back into analytics."""


@dataclass
class Node:
    name: str
    kind: NodeKind
    layer: int = 0
    row: int = 0
    state: str = ""
    """``running``/``stopped``/``broker down`` for apps; empty for topics."""
    rate: float | None = None
    """Events per second: out of an app, into a topic."""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Edge:
    source: str
    target: str
    rate: float | None = None
    lag: int | None = None
    """Records the target (a consumer group) is behind on this topic."""


@dataclass
class Topology:
    nodes: dict[str, Node]
    edges: list[Edge]
    taken_at: float

    def node_frame(self) -> pl.DataFrame:
        return pl.DataFrame([
            {"node": n.name, "kind": n.kind, "state": n.state or n.kind, "layer": n.layer,
             "row": n.row, "rate": n.rate, "label": n.name}
            for n in self.nodes.values()
        ])  # fmt: skip

    def edge_frame(self) -> pl.DataFrame:
        rows = []
        for e in self.edges:
            a, b = self.nodes[e.source], self.nodes[e.target]
            label = " · ".join(
                part for part in (
                    f"{e.rate:,.0f}/s" if e.rate else "",
                    f"lag {e.lag:,}" if e.lag else "",
                ) if part
            )  # fmt: skip
            rows.append({
                "source": e.source, "target": e.target, "x": a.layer, "y": a.row,
                "x2": b.layer, "y2": b.row, "lag": e.lag or 0, "label": label,
                "mid_x": (a.layer + b.layer) / 2, "mid_y": (a.row + b.row) / 2,
            })  # fmt: skip
        return pl.DataFrame(rows)


def _app_state(app: AppSpec, status: ProcessStatus | None, now: float) -> str:
    if status is None or now - status.updated_at > STALE_S:
        return "stopped"
    return "broker down" if not status.broker_up else "running"


def topology(
    settings: Settings,
    previous: Topology | None = None,
    apps: dict[str, AppSpec] | None = None,
    broker: bool = True,
) -> Topology:
    """The topology now; with ``previous`` (an earlier one) rates come from the change.

    ``broker=False`` leaves out the broker's figures (offsets, lag, topic rates).
    """
    now = time.time()
    apps = dict(apps or {a.name: a for a in load_apps().values() if "up" in a.targets})
    statuses = read_statuses(run_dir(settings))
    nodes: dict[str, Node] = {}
    edges: list[Edge] = []
    for app in apps.values():
        status = statuses.get(app.name)
        nodes[app.name] = Node(
            app.name, app.kind, state=_app_state(app, status, now),
            details={"group": app.group, "description": app.description,
                     "reads": list(app.reads), "writes": list(app.writes),
                     "last error": status.last_error if status else None,
                     "pid": status.pid if status else None,
                     "consumed": status.consumed if status else None,
                     "produced": status.produced if status else None},
        )  # fmt: skip
        for topic in app.reads:
            if topic not in HIDDEN:
                edges.append(Edge(topic, app.name))
        for topic in app.writes:
            if topic not in HIDDEN:
                edges.append(Edge(app.name, topic))
    for topic in {e.source for e in edges} | {e.target for e in edges}:
        if topic in TOPICS_BY_NAME and topic not in nodes:
            spec = TOPICS_BY_NAME[topic]
            details = {"role": spec.role, "description": spec.description}
            nodes[topic] = Node(topic, "topic", details=details)
    sinks = [a.name for a in apps.values() if a.kind == "sink"]
    if sinks:
        nodes[READ_MODELS] = Node(READ_MODELS, "store", details={"written by": sinks})
        edges += [Edge(name, READ_MODELS) for name in sinks]
        for dash in (a.name for a in apps.values() if a.kind == "dashboard"):
            edges.append(Edge(READ_MODELS, dash))
    if broker:
        _broker_figures(settings, nodes, edges, apps)
    topo = Topology(nodes, edges, now)
    if previous is not None:
        _rates(topo, previous)
    _layout(topo)
    return topo


def _broker_figures(
    settings: Settings, nodes: dict[str, Node], edges: list[Edge], apps: dict[str, AppSpec]
) -> None:
    """High watermarks per topic partition, committed offsets and lag per group."""
    metadata = fetch_metadata(settings, timeout=3.0)
    consumer = make_consumer(settings, "shopstream-dashboard-topology")
    admin = make_admin(settings)
    highs: dict[str, dict[int, int]] = {}
    try:
        for name, node in nodes.items():
            if node.kind != "topic" or name not in metadata.topics:
                continue
            highs[name] = {
                p: int(consumer.get_watermark_offsets(TopicPartition(name, p), timeout=3)[1])
                for p in sorted(metadata.topics[name].partitions)
            }
            node.details["partitions"] = len(highs[name])
            node.details["high watermarks"] = highs[name]
            node.details["records"] = sum(highs[name].values())
    finally:
        consumer.close()
    by_app = defaultdict(list)
    for edge in edges:
        if edge.target in apps and apps[edge.target].group and edge.source in highs:
            by_app[edge.target].append(edge)
    for app_name, app_edges in by_app.items():
        group = apps[app_name].group
        assert group is not None
        tps = [TopicPartition(e.source, p) for e in app_edges for p in highs[e.source]]
        try:
            answer = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, tps)]
            )[group].result(5)
        except KafkaException:
            continue
        committed: dict[str, dict[int, int]] = defaultdict(dict)
        for tp in answer.topic_partitions:
            committed[tp.topic][tp.partition] = max(tp.offset, 0)
        for edge in app_edges:
            marks = highs[edge.source]
            edge.lag = sum(max(0, marks[p] - committed[edge.source].get(p, 0)) for p in marks)
        nodes[app_name].details["committed offsets"] = {t: dict(c) for t, c in committed.items()}


def _rates(topo: Topology, previous: Topology) -> None:
    elapsed = topo.taken_at - previous.taken_at
    if elapsed <= 0:
        return
    for name, node in topo.nodes.items():
        before = previous.nodes.get(name)
        if before is None:
            continue
        key = "records" if node.kind == "topic" else "produced"
        now, then = node.details.get(key), before.details.get(key)
        if isinstance(now, int) and isinstance(then, int) and now >= then:
            node.rate = (now - then) / elapsed
    for edge in topo.edges:
        source, target = topo.nodes[edge.source], topo.nodes[edge.target]
        edge.rate = source.rate if source.kind == "topic" else target.rate


def _layout(topo: Topology) -> None:
    """Layers by the longest path from a source (events flow left to right), rows in order."""
    incoming: dict[str, list[str]] = defaultdict(list)
    for e in topo.edges:
        incoming[e.target].append(e.source)
    memo: dict[str, int] = {}

    def layer(name: str, trail: frozenset[str] = frozenset()) -> int:
        if name in memo:
            return memo[name]
        preds = [p for p in incoming.get(name, []) if p not in trail]
        memo[name] = 0 if not preds else 1 + max(layer(p, trail | {name}) for p in preds)
        return memo[name]

    rows: dict[int, int] = defaultdict(int)
    for name in sorted(topo.nodes, key=lambda n: (layer(n), topo.nodes[n].kind, n)):
        node = topo.nodes[name]
        node.layer = layer(name)
        node.row = rows[node.layer]
        rows[node.layer] += 1
    for node in topo.nodes.values():  # centre each layer vertically
        node.row = node.row - (rows[node.layer] - 1) / 2  # type: ignore[assignment]
