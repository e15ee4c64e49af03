"""Benchmarks: ``shopstream bench [--quick]`` measures every stage of the pipeline next to a
baseline measured in the same run and writes one report (:mod:`benchmarks.cli`).

Each stage is a module that can also run on its own (``python benchmarks/NAME.py``):
:mod:`~benchmarks.clients`, :mod:`~benchmarks.produce_throughput`,
:mod:`~benchmarks.router_throughput`, :mod:`~benchmarks.analytics_throughput`,
:mod:`~benchmarks.sink_throughput`, :mod:`~benchmarks.replay_throughput`,
:mod:`~benchmarks.endtoend`, :mod:`~benchmarks.freshness` and
:mod:`~benchmarks.dashboard_queries`. Inputs come from the shop simulator
(:mod:`benchmarks.inputs`), never from the tests. The core (``shopstream/``) does not
import this package; it plugs in through the ``shopstream.commands`` entry point.
"""
