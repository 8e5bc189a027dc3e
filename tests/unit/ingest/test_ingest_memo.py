"""The edge's memos keyed by client input are bounded by bytes, not only by entries (issue 17:
65,536 distinct 4 KB URLs pinned gigabytes per worker)."""

from __future__ import annotations

import sys
import tracemalloc
import uuid
from datetime import datetime, timezone

from ingest import fastpath
from ingest.memo import ENTRY_OVERHEAD, BoundedMemo

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=timezone.utc)


def test_a_memo_empties_itself_before_holding_more_than_its_budget() -> None:
    memo: BoundedMemo[int] = BoundedMemo(max_bytes=10_000, max_entries=1_000)
    for n in range(100):
        key = f"{n:04d}" + "x" * 996
        memo.remember(key, n, sys.getsizeof(key))
        assert memo.held <= 10_000
        assert memo.get(key) == n  # what was just remembered is there
    assert 0 < len(memo) <= 10_000 // (1_000 + ENTRY_OVERHEAD)
    memo.remember("huge", -1, 20_000)  # larger than the whole budget: not kept, nothing else lost
    assert "huge" not in memo and len(memo) > 0


def test_a_memo_is_bounded_by_entries_too() -> None:
    memo: BoundedMemo[int] = BoundedMemo(max_bytes=10**9, max_entries=3)
    for n in range(7):
        memo.remember(str(n), n, 50)
        assert len(memo) <= 3


def test_distinct_long_urls_referrers_and_queries_hold_at_most_the_memos_budgets() -> None:
    """12,000 hits, each with its own 2 KB URL (query included) and 1 KB referrer: the memos keep
    their budgets (32 MiB); under the old count-only bound (65,536 entries each) they held 72 MiB."""
    memos = (fastpath._URLS, fastpath._REFERRER_HOSTS, fastpath._CAMPAIGNS, fastpath._GUIDS)
    for memo in memos:
        memo.clear()
        memo.held = 0
    tracemalloc.start()
    try:
        for n in range(12_000):
            tag = uuid.uuid4().hex
            item = {"guid": str(uuid.uuid4()),
                    "url": f"https://www.example.com/{tag}/{'p' * 1000}?utm_source={tag}&q={'x' * 1000}",
                    "referrer": f"https://{tag}.example.org/{'r' * 1000}"}
            assert fastpath.fast_enrich(item, NOW, None, "", lambda: "00000000-0000-4000-8000-000000000000")
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    budgets = sum(memo.max_bytes for memo in memos)
    assert all(memo.held <= memo.max_bytes for memo in memos)
    assert held < budgets, f"{held / 2**20:.0f} MiB held by the memos, budgets {budgets / 2**20:.0f} MiB"
