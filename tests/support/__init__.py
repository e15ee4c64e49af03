"""Test support: sample events, an independent analytics oracle, apps as child processes.

Importable from tests and benchmarks as ``support.*`` (pytest puts ``tests/`` on the
path; benchmarks add it themselves). Nothing here is part of the product.
"""
