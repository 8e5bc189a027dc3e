"""Process set-up every component's `__main__` does: the garbage collector's policy.

A worker allocates a few dozen short-lived objects per record (decoded hits, output dicts)
while holding hundreds of thousands of long-lived ones (device states, sessions, Faust and
aiokafka internals). With CPython's default threshold (a young collection every 700
allocations, an older one every 10 of those) the collector runs every few records and keeps
re-walking the long-lived heap, a large share of the sessionizer's CPU (`bench/sessionizer_bench.py`
with and without TOUCHSTREAM_GC_GEN0_THRESHOLD=0 shows how much on the machine at hand).

`tune_gc` freezes what start-up created (moved out of the collector's sight for good: the
app, its modules, its settings) and collects the young generation every `gen0` allocations.
Nothing here holds reference cycles on the hot path, so garbage is still freed at once by
reference counting; the collector only finds cycles, less often.
"""

from __future__ import annotations

import gc

from schemas.settings import RuntimeSettings


def tune_gc(settings: RuntimeSettings) -> None:
    """Call once start-up has built the long-lived objects, before the first record."""
    gen0 = settings.gc_gen0_threshold
    if gen0 <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
