"""The channel simulators: mobile app, point of sale, web and warehouse producers.

One module per concern, from the world to the wire:

* :mod:`shopstream.shop.world` (core) - the fixed world: catalog, stores and DCs, customers.
* :mod:`shopstream.shop.traffic` (core) - when customers act: daily/weekly curves, flash sales.
* :mod:`producers.simulator` - the deterministic simulation, emitting ready records.
* :mod:`producers.faults` - malformed, duplicate and late events (also an API for tests).
* :mod:`producers.pacing` - token bucket and event-time clock.
* :mod:`producers.sender` - the Kafka loop: delivery reports, backpressure, stop.
* :mod:`producers.live` - live line and summary.
* :mod:`producers.app` - composition root; :mod:`producers.cli` - ``shopstream produce``.

See ``docs/producers.md``.
"""
