"""The DuckDB sink: the write path of the read models (the query side of CQRS).

:mod:`~pipelines.sink.feeds` says how each topic becomes rows,
:mod:`~pipelines.sink.writer` writes a checkpoint in one DuckLake transaction with its
offsets, :mod:`~pipelines.sink.app` is the Quix app. The tables are in
:mod:`readmodels.schema`; readers use :mod:`readmodels.queries`. See docs/read-models.md.
"""
