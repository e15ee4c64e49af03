"""Streaming analytics: windowed sales, returns and demand, and alerts that fire on silence.

Two stages, each a plain engine wired into one Quix Streams app
(:mod:`pipelines.analytics.app`, ``shopstream run analytics``):

* :mod:`~pipelines.analytics.local` - per input partition: 1-minute panes in event
  time, per-topic watermarks, late events kept with their reason, stock levels as
  of each question's time;
* :mod:`~pipelines.analytics.combine` - one combiner: merges the partitions' panes
  into final windows (sales per channel and store, top sellers over 15 minutes
  hopping every minute, returns and return rates, demand) and raises alerts.

:mod:`~pipelines.analytics.ticker` keeps event time moving when inputs go quiet.
The tests compare the app with ``tests/support/analytics_oracle.py``, which computes
the same aggregates with polars from a table of input events, independently.
See ``docs/analytics.md``.
"""
