"""A memo of pure results keyed by strings a client chose, bounded by the bytes it holds.

The edge remembers what it derived from URLs, referrers, query strings and guids, because
devices repeat them. An entry count alone does not bound such a memo: the keys are the
client's, up to 4,096 characters each, and 65,536 distinct long URLs would pin gigabytes per
worker. So each memo counts the bytes its entries hold (given by the caller, who knows the
value's shape: `sys.getsizeof` of its strings) and starts over when that passes its byte budget or its entry count. A
flood of distinct keys then costs the memo's hit rate, never the worker's memory.

A plain dict underneath: lookups are `memo.get(key)`, dict's own, as fast as before.
"""

from __future__ import annotations

from typing import TypeVar

V = TypeVar("V")

# What an entry holds besides the strings its caller counts: the dict's slot and index, and the
# value's container (a tuple is 40 bytes + 8 per item, a small dict about 200). An estimate
# erring high, so that the budget bounds the memory held.
ENTRY_OVERHEAD = 256


class BoundedMemo(dict[str, V]):
    """dict[str, V] that empties itself before it would hold more than `max_bytes` or
    `max_entries`. (Emptied, not evicted one by one: a miss costs what the memo saves, and the
    keys worth keeping come back at once.)"""

    __slots__ = ("max_bytes", "max_entries", "held")

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.held = 0  # bytes of the entries, as estimated by `remember`'s callers

    def remember(self, key: str, value: V, nbytes: int) -> None:
        """Keep `value` under `key`; `nbytes`: what the key's and the value's strings hold."""
        size = nbytes + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return  # larger than the whole budget: not worth a place
        if self.held + size > self.max_bytes or len(self) >= self.max_entries:
            self.clear()
            self.held = 0
        self[key] = value
        self.held += size
