"""The read models: the query side of CQRS, in DuckLake.

The sink (``pipelines/sink``) writes them from the topics; the dashboard and notebooks read
them while it writes. :mod:`~readmodels.lake` opens them, :mod:`~readmodels.schema` names
every table, :mod:`~readmodels.generations` keeps one generation per broker, and
:mod:`~readmodels.queries` is the typed query module readers share. See docs/read-models.md.
"""
