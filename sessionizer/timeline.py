"""Sessions as the rules give them on a slot's hits in time order (SPEC section 3).

`segment` is the batch computation of the rules: it walks the elements of a slot (retained
hits, and blocks of hits placed as one) in (time, hit_id) order and cuts them into runs. The
core calls it when a hit arrives out of order (`sessionizer.machine`); the in-order path makes
the same decisions one hit at a time with `split_reason`. Pure: no clock, no I/O.

A run ends when the next element starts a new session (the first rule that applies wins, in
the order of `split_reason`), or at a storage-cleared time (rule 12) — `storage_cleared` if
the run was still within the timeout then, `inactivity` if it had already expired. The last
run has no `end_reason`: whether it is open depends on event time, which the caller has.

Ties: hits of the same millisecond are ordered by hit_id, so the result does not depend on
arrival order even then; a storage-cleared time sorts after hits of its millisecond (the
session closed by it holds them, as rule 12 has it). An element whose time lies inside the
run's span (only a block can reach past the next element) joins it with no rule checked.
"""

from __future__ import annotations

from sessionizer.days import day_number
from sessionizer.rules import Rules
from sessionizer.state import REFERRER_HOST, Block, Element, Mark

INACTIVITY = "inactivity"
MAX_LENGTH = "max_length"
MIDNIGHT = "midnight"
CAMPAIGN_CHANGE = "campaign_change"
STORAGE_CLEARED = "storage_cleared"


class Run:
    """Consecutive elements that make one session."""

    __slots__ = ("elements", "first", "last", "campaign", "end_reason")

    def __init__(self, element: Element, first: int, last: int, campaign: tuple[str | None, ...]) -> None:
        self.elements: list[Element] = [element]
        self.first = first
        self.last = last
        self.campaign = campaign  # the landing's (rule 4 compares a new hit's with it)
        self.end_reason: str | None = None

    def __repr__(self) -> str:
        return f"Run({self.first}..{self.last}, {len(self.elements)} elements, end={self.end_reason})"


_NO_CAMPAIGN: tuple[str | None, ...] = ()


def campaign_of(mark: Mark, rules: Rules) -> tuple[str | None, ...]:
    """The campaign data a hit brings to rule 4: none when it arrives from a referral exclusion
    (a payment provider's return carrying its own utm tags does not start a new session)."""
    if rules.channels.referral_exclusions and rules.channels.excludes(mark[REFERRER_HOST]):
        return _NO_CAMPAIGN
    return mark[9:17]  # (Mark's campaign fields: see sessionizer.state)


def split_reason(first: int, last: int, campaign: tuple[str | None, ...], at: int, until: int,
                 element_campaign: tuple[str | None, ...], rules: Rules) -> str | None:
    """Why an element from `at` to `until` (a hit: both its time), not before `last`, starts a
    new session after one spanning `first`..`last` with landing campaign `campaign`; None if it
    joins."""
    if at - last > rules.timeout_ms:
        return INACTIVITY
    if until - first > rules.max_length_ms:
        return MAX_LENGTH
    tz = rules.midnight_tz
    if tz is not None and day_number(at, tz) != day_number(first, tz):
        return MIDNIGHT
    if rules.split_on_campaign and any(element_campaign) and element_campaign != campaign:
        return CAMPAIGN_CHANGE
    return None


def closed_by(cleared_at: int, last: int, rules: Rules) -> str:
    """The end_reason of a session whose last hit is at `last` when storage is cleared at `cleared_at`."""
    return STORAGE_CLEARED if cleared_at - last <= rules.timeout_ms else INACTIVITY


def segment(elements: list[Element], closes: list[int], rules: Rules) -> list[Run]:
    """The runs of `elements` (sorted by key) with storage cleared at the sorted times `closes`."""
    runs: list[Run] = []
    run: Run | None = None
    ci, n_closes = 0, len(closes)
    excluding = rules.split_on_campaign and bool(rules.channels.referral_exclusions)
    campaign: tuple[str | None, ...]
    brought: tuple[str | None, ...]
    for e in elements:
        if isinstance(e, Block):
            at, until, campaign = e.first, e.last, e.landing[9:17]
            brought = campaign
        else:
            at = until = e[0]  # (the mark's t)
            campaign = e[9:17]
            brought = campaign_of(e, rules) if excluding else campaign
        while ci < n_closes and closes[ci] < at:
            if run is not None:
                run.end_reason = closed_by(closes[ci], run.last, rules)
                runs.append(run)
                run = None
            ci += 1
        if run is not None:
            reason = None if at < run.last else split_reason(run.first, run.last, run.campaign, at, until, brought, rules)
            if reason is None:
                run.elements.append(e)
                if until > run.last:
                    run.last = until
                continue
            run.end_reason = reason
            runs.append(run)
        run = Run(e, at, until, campaign)
    if run is not None:
        if ci < n_closes:
            run.end_reason = closed_by(closes[ci], run.last, rules)
        runs.append(run)
    return runs
