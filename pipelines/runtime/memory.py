"""Arrow's memory in the processes that make Arrow tables in one thread and free them in
another: the sink (its consumer thread stages, its writer thread writes) and a replay
(its reader thread decodes, its main thread writes)."""

from __future__ import annotations

import pyarrow as pa


def use_jemalloc_for_arrow() -> str:
    """Make jemalloc Arrow's default memory pool for this process (the system allocator
    where pyarrow was built without jemalloc); returns the pool's name. Call once, early:
    buffers made before keep the pool they came from.

    Why: with Arrow's default pool (mimalloc) nearly every table one thread made after
    another thread freed the last took fresh memory from the kernel, which zeroes it (on
    this machine's transparent huge pages, 2 MB at a time). Measured in the sink: 7 % of
    its CPU samples in the kernel's ``clear_page_erms``, and 0.57-0.64 s of its consumer
    thread to turn 300,204 records into Arrow; with jemalloc, which reuses freed memory
    and gives it back after about a second idle, 0.15-0.17 s. A replay of 1,000,000
    orders read 0.98x-1.04x the per-message loop with it, 0.75x-0.89x without, in
    alternating runs.
    """
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.system_memory_pool())
    return pa.default_memory_pool().backend_name
