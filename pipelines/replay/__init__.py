"""Replay: rebuild the order-history model from the log, beside the live one, and compare.

See :mod:`pipelines.replay.engine`; ``shopstream replay`` is :mod:`pipelines.replay.cli`.
"""
