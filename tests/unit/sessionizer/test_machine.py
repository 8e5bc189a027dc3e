"""The session rules at their edges, one behaviour per test (SPEC section 3)."""

from __future__ import annotations

import pytest

from schemas.timefmt import from_ms, parse_timestamp, to_ms
from sessionizer.identity import session_id
from sessionizer.machine import (
    BOT,
    DeviceState,
    Emitted,
    Rules,
    next_deadline_ms,
    on_close,
    on_hit,
    on_time,
)

from .driver import GUID, HOUR, MIN, OTHER_GUID, T0, Partition, close_record, hit_id, make_hit

TIMEOUT = 30 * MIN
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def play(times: list[int], rules: Rules | None = None, *, advance: bool = True, **hit_kwargs) -> Partition:
    part = Partition(rules=rules or Rules())
    for n, t in enumerate(times):
        part.hit(make_hit(t, hid=n + 1, **hit_kwargs))
        if advance:
            part.advance(part.event_time)
    part.finish()
    return part


def spans(part: Partition) -> list[tuple[int, int, int, str | None]]:
    return [(to_ms(s["started_at"]), to_ms(s["last_seen_at"]), s["hits"], s["end_reason"]) for s in part.sessions()]


# -- rule 2: inactivity ---------------------------------------------------------------------


@pytest.mark.parametrize("advance", [False, True])
def test_gap_of_exactly_the_timeout_stays(advance: bool) -> None:
    assert spans(play([T0, T0 + TIMEOUT], advance=advance)) == [(T0, T0 + TIMEOUT, 2, "inactivity")]


@pytest.mark.parametrize("advance", [False, True])
def test_gap_one_ms_over_the_timeout_splits(advance: bool) -> None:
    assert spans(play([T0, T0 + TIMEOUT + 1], advance=advance)) == [
        (T0, T0, 1, "inactivity"),
        (T0 + TIMEOUT + 1, T0 + TIMEOUT + 1, 1, "inactivity"),
    ]


def test_timeout_is_a_setting() -> None:
    rules = Rules(timeout_ms=10 * MIN)
    assert len(play([T0, T0 + 10 * MIN], rules).sessions()) == 1
    assert len(play([T0, T0 + 10 * MIN + 1], rules).sessions()) == 2


# -- rule 7: closing by event time ------------------------------------------------------------


def test_deadline_is_the_first_event_time_that_closes() -> None:
    rules = Rules()
    out = Emitted()
    state = on_hit(None, make_hit(T0, hid=1), rules, T0, out)
    assert next_deadline_ms(state, rules) == T0 + TIMEOUT + 1
    out = Emitted()
    state = on_time(state, rules, T0 + TIMEOUT, out)
    assert out.sessions == [] and state.open_sessions() == 1
    state = on_time(state, rules, T0 + TIMEOUT + 1, out)
    [closed] = out.sessions
    assert closed["status"] == "closed" and closed["end_reason"] == "inactivity"
    assert closed["ended_at"] == closed["last_seen_at"] == from_ms(T0)
    # Next: when no hit can reach the session any more, its hits leave the state.
    assert next_deadline_ms(state, rules) == T0 + TIMEOUT + rules.lateness_ms + 1


def test_on_hit_first_closes_what_event_time_expired() -> None:
    rules = Rules()
    out = Emitted()
    state = on_hit(None, make_hit(T0, hid=1, guid=GUID), rules, T0, out)
    out = Emitted()
    # A hit 5 min later, but the partition's event time has passed the deadline already.
    state = on_hit(state, make_hit(T0 + 5 * MIN, hid=2), rules, T0 + TIMEOUT + 1, out)
    first, second = out.sessions
    assert first["status"] == "closed" and first["hits"] == 1
    # ...and the hit rejoins the session it closed: within the timeout of its last hit.
    assert second["session_id"] == first["session_id"] and second["hits"] == 2
    assert second["version"] == first["version"] + 1


def test_a_very_late_first_hit_is_published_closed_once() -> None:
    rules = Rules()
    out = Emitted()
    state = on_hit(None, make_hit(T0, hid=1), rules, T0 + 5 * HOUR, out)
    [snap] = out.sessions
    assert snap["status"] == "closed" and snap["version"] == 1 and snap["end_reason"] == "inactivity"
    assert next_deadline_ms(state, rules) == T0 + TIMEOUT + rules.lateness_ms + 1


# -- rule 3: maximum length -----------------------------------------------------------------


def _every(step: int, until: int) -> list[int]:
    return list(range(T0, T0 + until + 1, step))


def test_max_length_of_exactly_24h_stays() -> None:
    times = _every(20 * MIN, 24 * HOUR)
    assert times[-1] == T0 + 24 * HOUR
    assert spans(play(times)) == [(T0, T0 + 24 * HOUR, len(times), "inactivity")]


def test_max_length_plus_one_ms_splits() -> None:
    times = _every(20 * MIN, 24 * HOUR) + [T0 + 24 * HOUR + 1]
    assert spans(play(times)) == [
        (T0, T0 + 24 * HOUR, len(times) - 1, "max_length"),
        (T0 + 24 * HOUR + 1, T0 + 24 * HOUR + 1, 1, "inactivity"),
    ]


def test_a_backward_hit_moves_the_max_length_boundary() -> None:
    rules = Rules(timeout_ms=HOUR, max_length_ms=2 * HOUR)
    part = Partition(rules=rules)
    part.hit(make_hit(T0, hid=1))
    part.hit(make_hit(T0 + HOUR, hid=2))
    part.hit(make_hit(T0 + 2 * HOUR, hid=3))  # exactly max length: stays
    part.hit(make_hit(T0 - 1, hid=4))         # now 2 h + 1 ms before hit 3: hit 3 starts the next session
    part.finish()
    assert spans(part) == [(T0 - 1, T0 + HOUR, 3, "max_length"), (T0 + 2 * HOUR, T0 + 2 * HOUR, 1, "inactivity")]
    first, second = part.sessions()
    placed = part.placed()
    assert first["session_id"] == session_id(GUID, hit_id(1))    # keeps its id and hits 1, 2, 4
    assert second["session_id"] == session_id(GUID, hit_id(3))   # hit 3 moved to a session of its own
    assert placed[hit_id(3)]["session_id"] == second["session_id"]
    assert [r["hit_id"] for r in part.records if r["kind"] == "move"] == [hit_id(3)]


# -- rule 4: midnight -------------------------------------------------------------------------


def test_midnight_splits_in_the_configured_zone() -> None:
    rules = Rules(midnight_tz="America/New_York")
    before = to_ms(parse_timestamp("2026-03-02T23:50:00-05:00"))
    after = to_ms(parse_timestamp("2026-03-03T00:10:00-05:00"))
    assert spans(play([before, after], rules)) == [(before, before, 1, "midnight"), (after, after, 1, "inactivity")]
    # Midnight UTC falls inside the visit and does not split it there...
    assert len(play([before, after], Rules(midnight_tz="Europe/London")).sessions()) == 1
    # ...and with the split off nothing splits.
    assert len(play([before, after]).sessions()) == 1


def test_a_late_hit_from_the_day_before_opens_a_session_before() -> None:
    rules = Rules(midnight_tz="UTC")
    part = Partition(rules=rules)
    part.hit(make_hit("2026-03-03T00:05:00Z", hid=1))
    part.hit(make_hit("2026-03-02T23:55:00Z", hid=2))  # 10 min earlier, but yesterday
    part.finish()
    assert [(s["hits"], s["session_index"], s["end_reason"]) for s in part.sessions()] == [
        (1, 1, "midnight"), (1, 2, "inactivity")]


def test_midnight_on_a_dst_day() -> None:
    rules = Rules(midnight_tz="America/New_York", timeout_ms=2 * HOUR)
    # 2026-03-08 has 23 hours in New York; 23:30 and 00:30 local straddle its end.
    a = to_ms(parse_timestamp("2026-03-08T23:30:00-04:00"))
    b = to_ms(parse_timestamp("2026-03-09T00:30:00-04:00"))
    c = to_ms(parse_timestamp("2026-03-08T00:30:00-05:00"))
    assert [s["end_reason"] for s in play([a, b], rules).sessions()] == ["midnight", "inactivity"]
    assert len(play([c, c + HOUR], rules).sessions()) == 1


# -- rule 4: campaign change --------------------------------------------------------------------


FB = {"source": "facebook", "medium": "paid_social"}
GOOGLE = {"source": "google", "medium": "cpc"}


def _campaign_run(steps: list[tuple[int, dict[str, str] | None]], rules: Rules) -> Partition:
    part = Partition(rules=rules)
    for n, (t, utm) in enumerate(steps):
        part.hit(make_hit(t, hid=n + 1, utm=utm))
    part.finish()
    return part


def test_campaign_change_splits_only_when_on() -> None:
    steps = [(T0, GOOGLE), (T0 + MIN, None), (T0 + 2 * MIN, GOOGLE), (T0 + 3 * MIN, FB)]
    on = _campaign_run(steps, Rules(split_on_campaign=True))
    assert [(s["utm_source"], s["hits"], s["end_reason"]) for s in on.sessions()] == [
        ("google", 3, "campaign_change"),  # no campaign data and the same campaign do not split
        ("facebook", 1, "inactivity"),
    ]
    assert len(_campaign_run(steps, Rules()).sessions()) == 1


def test_a_new_click_id_is_a_campaign_change() -> None:
    part = Partition(rules=Rules(split_on_campaign=True))
    part.hit(make_hit(T0, hid=1, url="https://www.oakridge-apts.com/?gclid=one"))
    part.hit(make_hit(T0 + MIN, hid=2, url="https://www.oakridge-apts.com/?gclid=one"))
    part.hit(make_hit(T0 + 2 * MIN, hid=3, url="https://www.oakridge-apts.com/?gclid=two"))
    part.finish()
    assert [(s["click_id"], s["hits"]) for s in part.sessions()] == [("one", 2), ("two", 1)]


def test_campaign_change_for_a_backward_hit_follows_time_order() -> None:
    rules = Rules(split_on_campaign=True)
    # A campaign-less session gains an earlier campaign landing: time order gives one session.
    part = _campaign_run([(T0 + 10 * MIN, None), (T0, GOOGLE)], rules)
    assert [(s["utm_source"], s["hits"], to_ms(s["started_at"])) for s in part.sessions()] == [("google", 2, T0)]
    # A campaign session cannot take an earlier hit with other (or no) campaign data: in time
    # order those hits are a session of their own, before it.
    part = _campaign_run([(T0 + 10 * MIN, GOOGLE), (T0, FB), (T0 + 1, None)], rules)
    assert [(s["utm_source"], s["hits"], s["end_reason"]) for s in part.sessions()] == [
        ("facebook", 2, "campaign_change"), ("google", 1, "inactivity")]


def test_a_late_campaign_hit_inside_a_session_splits_it_there() -> None:
    part = _campaign_run([(T0, GOOGLE), (T0 + 10 * MIN, None), (T0 + 5 * MIN, FB)], Rules(split_on_campaign=True))
    assert [(s["utm_source"], s["hits"], s["end_reason"]) for s in part.sessions()] == [
        ("google", 1, "campaign_change"), ("facebook", 2, "inactivity")]
    # The hit at 09:10 now belongs to the facebook session: its record was re-pointed.
    facebook = part.sessions()[1]["session_id"]
    assert part.placed()[hit_id(2)]["session_id"] == facebook


# -- rules 5 and 6: order and late hits ---------------------------------------------------------


def test_backward_hit_takes_over_the_landing_but_not_the_id() -> None:
    part = Partition()
    part.hit(make_hit(T0 + 10 * MIN, hid=1, url="https://www.oakridge-apts.com/floorplans"))
    part.hit(make_hit(T0 + 12 * MIN, hid=2, url="https://www.oakridge-apts.com/amenities"))
    part.hit(make_hit(T0, hid=3, url="https://www.oakridge-apts.com/?utm_source=google&utm_medium=cpc",
                      referrer="https://www.google.com/"))
    part.hit(make_hit(T0 + 11 * MIN, hid=4, url="https://www.oakridge-apts.com/pets"))  # in span: not the exit
    part.finish()
    [s] = part.sessions()
    assert s["session_id"] == session_id(GUID, hit_id(1))
    assert to_ms(s["started_at"]) == T0 and s["duration_s"] == 12 * 60
    assert s["landing_url"] == "https://www.oakridge-apts.com/?utm_source=google&utm_medium=cpc"
    assert s["landing_path"] == "/" and s["referrer_host"] == "www.google.com"
    assert (s["utm_source"], s["utm_medium"], s["channel"]) == ("google", "cpc", "Paid Search")
    assert s["exit_url"] == "https://www.oakridge-apts.com/amenities"


@pytest.mark.parametrize("roundtrip", [False, True])
def test_late_hits_inside_a_session_join_it_and_the_exit_follows_time_order(roundtrip: bool) -> None:
    # (the common late hit, placed without cutting the slot into sessions again)
    page = "https://www.oakridge-apts.com/"
    part = Partition(roundtrip=roundtrip)
    part.hit(make_hit(T0, hid=1, url=page + "a"))
    part.hit(make_hit(T0 + 10 * MIN, hid=2, type="event"))        # the latest hit is an event
    part.hit(make_hit(T0 + 5 * MIN, hid=3, url=page + "b"))        # late, inside: the latest pageview
    part.hit(make_hit(T0 + 2 * MIN, hid=4, url=page + "c"))        # late, inside, before it: not the exit
    part.hit(make_hit(T0 + 2 * MIN, hid=4, url=page + "c"))        # its duplicate: nothing
    part.hit(make_hit(T0 + 7 * MIN, hid=5, type="event"))          # a late event inside
    part.finish()
    [s] = part.sessions()
    assert s["session_id"] == session_id(GUID, hit_id(1))
    assert (s["pageviews"], s["events"], s["hits"]) == (3, 2, 5)
    assert (s["landing_url"], s["exit_url"]) == (page + "a", page + "b")
    assert to_ms(s["started_at"]) == T0 and s["duration_s"] == 10 * 60
    assert {r["session_id"] for r in part.placed().values()} == {s["session_id"]}
    assert len(part.placed()) == 5


def test_late_rejoin_exactly_at_the_timeout_edge() -> None:
    for late, rejoins in [(T0 + 20 * MIN + TIMEOUT, True), (T0 + 20 * MIN + TIMEOUT + 1, False)]:
        part = Partition()
        part.hit(make_hit(T0, hid=1))
        part.hit(make_hit(T0 + 20 * MIN, hid=2))
        part.hit(make_hit(T0 + 5 * HOUR, hid=3, guid=OTHER_GUID))  # moves event time: closes the first
        part.advance(part.event_time)
        assert [s["status"] for s in part.snapshots if s["guid"] == GUID][-1] == "closed"
        part.hit(make_hit(late, hid=4))
        part.finish()
        mine = [s for s in part.sessions() if s["guid"] == GUID]
        if rejoins:
            assert [(s["hits"], to_ms(s["last_seen_at"])) for s in mine] == [(3, late)]
            assert mine[0]["session_id"] == session_id(GUID, hit_id(1))
        else:  # after the closed session and outside it: a session of its own
            assert [s["hits"] for s in mine] == [2, 1] and [s["session_index"] for s in mine] == [1, 2]


def test_late_rejoin_before_the_first_hit_edge() -> None:
    for late, rejoins in [(T0 - TIMEOUT, True), (T0 - TIMEOUT - 1, False)]:
        part = Partition()
        part.hit(make_hit(T0, hid=1))
        part.advance(T0 + 5 * HOUR)
        part.hit(make_hit(late, hid=2))
        part.finish()
        if rejoins:
            [s] = part.sessions()
            assert s["hits"] == 2 and to_ms(s["started_at"]) == late and s["status"] == "closed"
        else:  # a session of its own, before: the first one is renumbered
            assert [(s["hits"], s["session_index"]) for s in part.sessions()] == [(1, 1), (1, 2)]
            assert part.sessions()[1]["session_id"] == session_id(GUID, hit_id(1))
            assert part.counts.inserted == 1 and part.counts.renumbered == 1


def test_late_hit_before_the_open_session_opens_one_before_it() -> None:
    part = Partition()
    part.hit(make_hit(T0 + 2 * HOUR, hid=1))
    part.hit(make_hit(T0, hid=2))
    part.finish()
    first, second = part.sessions()
    assert (to_ms(first["started_at"]), first["session_index"], first["session_id"]) == (T0, 1, session_id(GUID, hit_id(2)))
    assert (second["session_index"], second["session_id"]) == (2, session_id(GUID, hit_id(1)))
    assert all(r["kind"] != "late_hit" for r in part.records)


def test_late_hits_between_and_before_sessions_open_their_own() -> None:
    part = Partition()
    part.hit(make_hit(T0, hid=1))
    part.hit(make_hit(T0 + 3 * HOUR, hid=2))
    part.hit(make_hit(T0 + 90 * MIN, hid=3))  # 90 min from either: a session between them
    part.hit(make_hit(T0 - 2 * HOUR, hid=4))  # before both
    part.finish()
    assert [(to_ms(s["started_at"]), s["session_index"]) for s in part.sessions()] == [
        (T0 - 2 * HOUR, 1), (T0, 2), (T0 + 90 * MIN, 3), (T0 + 3 * HOUR, 4)]
    assert part.counts.inserted == 2


def _bridged(late: int) -> Partition:
    # Session 1 ends 09:20, session 2 starts 09:55 (35 min gap); `late` lies within the timeout
    # of both, so in time order they are one session.
    part = Partition()
    part.hit(make_hit(T0, hid=1))
    part.hit(make_hit(T0 + 20 * MIN, hid=2))
    part.hit(make_hit(T0 + 55 * MIN, hid=3))
    part.hit(make_hit(late, hid=4))
    part.finish()
    return part


@pytest.mark.parametrize("late", [T0 + 30 * MIN, T0 + 37 * MIN + 30_000, T0 + 40 * MIN])
def test_a_bridging_hit_merges_the_two_sessions(late: int) -> None:
    part = _bridged(late)
    [s] = part.sessions()
    assert (s["hits"], to_ms(s["started_at"]), to_ms(s["last_seen_at"])) == (4, T0, T0 + 55 * MIN)
    # The earlier session survives with its id; the other is retracted into it and its hit moved.
    assert s["session_id"] == session_id(GUID, hit_id(1))
    assert part.retracted() == {session_id(GUID, hit_id(3)): s["session_id"]}
    assert {rec["session_id"] for rec in part.placed().values()} == {s["session_id"]}
    assert part.counts.merges == 1 and part.counts.moves == 1


def test_a_bridging_hit_after_both_sessions_closed_merges_them() -> None:
    part = Partition()
    part.hit(make_hit(T0, hid=1))
    part.hit(make_hit(T0 + 55 * MIN, hid=2))
    part.advance(T0 + 5 * HOUR)  # both closed
    assert [s["status"] for s in part.sessions()] == ["closed", "closed"]
    part.hit(make_hit(T0 + 28 * MIN, hid=3))
    part.finish()
    [s] = part.sessions()
    assert (s["hits"], s["status"], s["end_reason"]) == (3, "closed", "inactivity")


def test_a_split_gives_back_a_retracted_id_with_a_higher_version() -> None:
    # timeout 1 h, max length 2 h. A 09:00 and B 10:30 are two sessions; C 09:45 bridges them
    # (B's session is retracted into A's); D 08:10 then moves the max-length boundary so that
    # B is 2 h 20 after the first hit: B's session exists again, under its old id.
    rules = Rules(timeout_ms=HOUR, max_length_ms=2 * HOUR)
    part = Partition(rules=rules)
    for n, at in enumerate([T0, T0 + 90 * MIN, T0 + 45 * MIN], 1):
        part.hit(make_hit(at, hid=n))
    b = session_id(GUID, hit_id(2))
    assert part.retracted() == {b: session_id(GUID, hit_id(1))}
    retracted_at = part.snapshots[-1]["version"] if part.snapshots[-1]["session_id"] == b else None
    part.hit(make_hit(T0 - 50 * MIN, hid=4))
    part.finish()
    assert [(s["hits"], s["end_reason"]) for s in part.sessions()] == [(3, "max_length"), (1, "inactivity")]
    back = part.sessions()[1]
    assert back["session_id"] == b and part.retracted() == {}
    retraction = next(s for s in part.snapshots if s.get("kind") == "retraction")
    assert back["version"] > retraction["version"] and (retracted_at is None or retracted_at == retraction["version"])
    assert part.placed()[hit_id(2)]["session_id"] == b


def test_rejoining_an_idle_closed_session_can_reopen_it() -> None:
    rules = Rules()
    out = Emitted()
    state = on_hit(None, make_hit(T0, hid=1), rules, T0, out)
    state = on_time(state, rules, T0 + TIMEOUT + 1, out)  # closed
    out = Emitted()
    state = on_hit(state, make_hit(T0 + 25 * MIN, hid=2), rules, T0 + TIMEOUT + 1, out)
    [snap] = out.sessions
    assert snap["status"] == "open" and snap["ended_at"] is None and snap["end_reason"] is None
    assert snap["version"] == 3 and snap["hits"] == 2
    assert next_deadline_ms(state, rules) == T0 + 25 * MIN + TIMEOUT + 1


def test_late_campaign_hits_are_placed_between_campaign_sessions() -> None:
    # google 09:10-09:12, facebook from 09:15; a late facebook hit at 09:05 is a session of its
    # own before them (google lies between it and the facebook one).
    part = Partition(rules=Rules(split_on_campaign=True))
    part.hit(make_hit(T0 + 10 * MIN, hid=1, utm=GOOGLE))
    part.hit(make_hit(T0 + 12 * MIN, hid=2, utm=GOOGLE))
    part.hit(make_hit(T0 + 15 * MIN, hid=3, utm=FB))
    part.hit(make_hit(T0 + 5 * MIN, hid=4, utm=FB))
    part.finish()
    assert [(s["utm_source"], s["hits"], s["session_index"]) for s in part.sessions()] == [
        ("facebook", 1, 1), ("google", 2, 2), ("facebook", 1, 3)]


def test_a_late_campaign_hit_splits_a_closed_session() -> None:
    rules = Rules(split_on_campaign=True)
    part = Partition(rules=rules)
    part.hit(make_hit(T0, hid=1, utm=GOOGLE))
    part.hit(make_hit(T0 + 10 * MIN, hid=2, utm=GOOGLE))
    part.hit(make_hit(T0 + 15 * MIN, hid=3, utm=FB))
    part.hit(make_hit(T0 + 3 * HOUR, hid=4))
    part.advance(T0 + 3 * HOUR)
    part.hit(make_hit(T0 + 5 * MIN, hid=5, utm=FB))  # splits google's session: 09:10 (google) starts another
    part.finish()
    sessions = part.sessions()
    assert [(s["utm_source"], s["hits"]) for s in sessions] == [
        ("google", 1), ("facebook", 1), ("google", 1), ("facebook", 1), (None, 1)]
    assert [s["session_index"] for s in sessions] == [1, 2, 3, 4, 5]
    for a, b in zip(sessions, sessions[1:]):
        assert a["last_seen_at"] < b["started_at"]


# -- rule 8: duplicates ---------------------------------------------------------------------


def test_duplicates_are_ignored_without_a_trace() -> None:
    rules = Rules()
    out = Emitted()
    state = on_hit(None, make_hit(T0, hid=1), rules, T0, out)
    before = state.to_bytes()
    out = Emitted()
    state = on_hit(state, make_hit(T0, hid=1), rules, T0, out)
    assert out.sessions == [] and out.records == []
    assert state.to_bytes() == before


def test_duplicate_of_a_closed_sessions_hit_does_not_rejoin() -> None:
    part = Partition()
    part.hit(make_hit(T0, hid=1))
    part.advance(T0 + 2 * HOUR)
    part.hit(make_hit(T0, hid=1))
    part.finish()
    assert [s["hits"] for s in part.sessions()] == [1]
    assert len(part.records) == 1


def test_dedupe_memory_is_bounded() -> None:
    rules = Rules(dedupe_size=8)
    state = None
    for n in range(20):
        state = on_hit(state, make_hit(T0 + n * MIN, hid=n + 1), rules, T0, Emitted())
    assert len(state.ring) == 8 * 8
    out = Emitted()
    on_hit(state, make_hit(T0 + 19 * MIN, hid=20), rules, T0, out)  # recent: ignored
    assert out.records == []
    on_hit(state, make_hit(T0, hid=1), rules, T0, out)  # out of the ring, but still retained: ignored
    assert out.records == []


def test_a_replayed_batch_is_ignored_by_offset_however_long() -> None:
    rules = Rules()
    state = None
    hits = [make_hit(T0 + n * 1000, hid=n + 1) for n in range(200)]
    for offset, hit in enumerate(hits):
        state = on_hit(state, hit, rules, T0, Emitted(), offset=1000 + offset)
    assert state.offset == 1199
    out = Emitted()
    for offset, hit in enumerate(hits):  # the whole batch again: 200 hits > the 64 fingerprints
        state = on_hit(state, hit, rules, T0, out, offset=1000 + offset)
    assert out.sessions == [] and out.records == []
    assert state.slots[""].open.hits == 200
    assert DeviceState.from_bytes(state.to_bytes()).offset == 1199
    # Without offsets, the fingerprint memory alone would let most of it through (each
    # re-applied hit pushes out the next one's fingerprint); the retained hits catch them while
    # the device keeps them (Rules.retained_hits), the offsets however long ago they were.
    for hit in hits:
        state = on_hit(state, hit, rules, T0, out)
    assert out.records == []


def test_a_replayed_close_record_is_ignored_by_offset() -> None:
    rules = Rules()
    state = on_hit(None, make_hit(T0, hid=1), rules, T0, Emitted(), offset=5)
    state = on_close(state, close_record(GUID, T0 + MIN), rules, T0, Emitted(), offset=6)
    state = on_hit(state, make_hit(T0 + 2 * MIN, hid=2), rules, T0, Emitted(), offset=7)  # rejoins: reopened
    out = Emitted()
    state = on_close(state, close_record(GUID, T0 + MIN), rules, T0, out, offset=6)
    assert out.sessions == []


# -- rules 9 and 10: identity, index, events ------------------------------------------------------


def test_session_index_counts_per_device_and_ids_are_uuid5() -> None:
    part = play([T0, T0 + HOUR, T0 + 2 * HOUR])
    assert [s["session_index"] for s in part.sessions()] == [1, 2, 3]
    assert [s["session_id"] for s in part.sessions()] == [session_id(GUID, hit_id(n)) for n in (1, 2, 3)]


def test_scope_site_counts_per_site() -> None:
    part = Partition(rules=Rules(scope="site"))
    part.hit(make_hit(T0, hid=1, url="https://a.example/"))
    part.hit(make_hit(T0 + MIN, hid=2, url="https://b.example/"))
    part.hit(make_hit(T0 + HOUR, hid=3, url="https://a.example/x"))
    part.finish()
    assert [(s["site"], s["session_index"]) for s in part.sessions()] == [("a.example", 1), ("a.example", 2),
                                                                          ("b.example", 1)]
    device = Partition()
    for n, (t, url) in enumerate([(T0, "https://a.example/"), (T0 + MIN, "https://b.example/")]):
        device.hit(make_hit(t, hid=n + 1, url=url))
    device.finish()
    assert [(s["site"], s["hits"]) for s in device.sessions()] == [("a.example", 2)]


def test_an_event_opens_a_session_and_both_types_extend_it() -> None:
    part = Partition()
    part.hit(make_hit(T0, hid=1, type="event", url="https://www.oakridge-apts.com/apply"))
    part.advance(T0)
    snap = part.snapshots[-1]
    assert snap["landing_url"] == "https://www.oakridge-apts.com/apply" and snap["exit_url"] is None
    assert (snap["pageviews"], snap["events"], snap["is_bounce"]) == (0, 1, False)
    part.hit(make_hit(T0 + 25 * MIN, hid=2, type="event"))
    part.hit(make_hit(T0 + 50 * MIN, hid=3))
    part.finish()
    [s] = part.sessions()
    assert (s["pageviews"], s["events"], s["hits"], s["is_bounce"]) == (1, 2, 3, False)
    event = part.placed()[hit_id(1)]
    assert event["kind"] == "event" and event["name"] == "lead" and event["module"] == "contact_form"
    assert event["properties"] == {"unit": "2B"} and event["session_id"] == s["session_id"]


def test_a_single_pageview_is_a_bounce() -> None:
    [s] = play([T0]).sessions()
    assert s["is_bounce"] is True and s["duration_s"] == 0


# -- rule 11: bots --------------------------------------------------------------------------


def test_bots_are_flagged_by_default() -> None:
    [s] = play([T0, T0 + MIN], user_agent=GOOGLEBOT).sessions()
    assert s["is_bot"] is True and s["device_type"] == "bot" and s["hits"] == 2


def test_drop_bots_keeps_no_state_and_accounts_for_the_hit() -> None:
    rules = Rules(drop_bots=True)
    out = Emitted()
    assert on_hit(None, make_hit(T0, hid=1, user_agent=GOOGLEBOT), rules, T0, out) is None
    assert out.sessions == [] and [r.reason for r in out.records] == [BOT]
    silent = Rules(drop_bots=True, record_dropped_bots=False)
    out = Emitted()
    assert on_hit(None, make_hit(T0, hid=1, user_agent=GOOGLEBOT), silent, T0, out) is None
    assert out.records == []
    human = on_hit(None, make_hit(T0, hid=2), rules, T0, out)
    assert human is not None and human.open_sessions() == 1


def test_a_data_centre_landing_flags_its_session() -> None:
    # Flagged, not dropped, by default; the user agent still says what the device claims to be.
    [s] = play([T0, T0 + MIN], datacenter=True).sessions()
    assert s["is_bot"] is True and s["device_type"] == "desktop" and s["hits"] == 2
    part = Partition()
    part.hit(make_hit(T0, hid=1))
    part.hit(make_hit(T0 + MIN, hid=2, datacenter=True))  # not the landing: the session stays a person's
    part.finish()
    assert [x["is_bot"] for x in part.sessions()] == [False]


def test_drop_datacenter_drops_and_accounts_for_the_hit() -> None:
    rules = Rules(drop_datacenter=True)
    out = Emitted()
    assert on_hit(None, make_hit(T0, hid=1, datacenter=True), rules, T0, out) is None
    assert out.sessions == [] and [r.reason for r in out.records] == [BOT]
    out = Emitted()
    assert on_hit(None, make_hit(T0, hid=2, user_agent=GOOGLEBOT), rules, T0, out) is not None  # drop_bots is apart
    out = Emitted()
    assert on_hit(None, make_hit(T0, hid=3, datacenter=True), Rules(drop_bots=True), T0, out) is not None


# -- rule 12: cleared storage -------------------------------------------------------------------


def test_close_record_ends_the_open_session() -> None:
    part = Partition(rules=Rules(scope="site"))
    part.hit(make_hit(T0, hid=1, url="https://a.example/"))
    part.hit(make_hit(T0 + MIN, hid=2, url="https://b.example/"))
    part.close(close_record(GUID, T0 + 5 * MIN))
    assert {s["end_reason"] for s in part.sessions()} == {"storage_cleared"}
    assert all(s["ended_at"] == s["last_seen_at"] for s in part.sessions())
    before = len(part.snapshots)
    part.close(close_record(GUID, T0 + 6 * MIN))  # again (a replay): nothing left to close
    assert len(part.snapshots) == before


def test_close_record_for_an_idle_session_keeps_inactivity() -> None:
    part = Partition()
    part.hit(make_hit(T0, hid=1))
    part.close(close_record(GUID, T0 + 2 * HOUR))
    assert [s["end_reason"] for s in part.sessions()] == ["inactivity"]


def test_close_record_without_state() -> None:
    out = Emitted()
    assert on_close(None, close_record(GUID, T0), Rules(), T0, out) is None
    assert out.sessions == []


# -- the snapshot -------------------------------------------------------------------------------


def test_snapshot_is_complete() -> None:
    part = Partition()
    part.hit(make_hit(T0, hid=1, url="https://www.oakridge-apts.com/floorplans?utm_source=newsletter&utm_medium=email"
                                      "&utm_campaign=spring&utm_term=2br&utm_content=hero&utm_id=42",
                      referrer="https://mail.google.com/", title="Floor plans"))
    part.hit(make_hit(T0 + 2 * MIN, hid=2, url="https://www.oakridge-apts.com/contact"))
    snap = part.snapshots[-1]
    assert snap == {
        "v": 1,
        "session_id": session_id(GUID, hit_id(1)),
        "guid": GUID,
        "session_index": 1,
        "site": "www.oakridge-apts.com",
        "status": "open",
        "started_at": from_ms(T0),
        "last_seen_at": from_ms(T0 + 2 * MIN),
        "ended_at": None,
        "end_reason": None,
        "duration_s": 120.0,
        "landing_url": "https://www.oakridge-apts.com/floorplans?utm_source=newsletter&utm_medium=email"
                       "&utm_campaign=spring&utm_term=2br&utm_content=hero&utm_id=42",
        "landing_path": "/floorplans",
        "exit_url": "https://www.oakridge-apts.com/contact",
        "referrer": "https://mail.google.com/",
        "referrer_host": "mail.google.com",
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "spring",
        "utm_term": "2br",
        "utm_content": "hero",
        "utm_id": "42",
        "click_id": None,
        "click_id_type": None,
        "channel": "Email",
        "ip": "203.0.113.0",
        "user_agent": make_hit(T0).user_agent,
        "browser": "Chrome",
        "os": "Windows",
        "device_type": "desktop",
        "is_bot": False,
        "pageviews": 2,
        "events": 0,
        "hits": 2,
        "is_bounce": False,
        "version": 2,
    }
    page = part.placed()[hit_id(1)]
    assert page["kind"] == "pageview" and page["title"] == "Floor plans" and page["path"] == "/floorplans"
    assert page["occurred_at"] == from_ms(T0)


def test_versions_grow_through_close_and_rejoin() -> None:
    part = Partition()
    part.hit(make_hit(T0, hid=1))
    part.hit(make_hit(T0 + MIN, hid=2))
    part.advance(T0 + 3 * HOUR)
    part.hit(make_hit(T0 + 2 * MIN, hid=3))
    assert [(s["version"], s["status"]) for s in part.snapshots] == [(1, "open"), (2, "open"), (3, "closed"),
                                                                    (4, "closed")]


def test_interface_accepts_a_fresh_state_object() -> None:
    state = DeviceState(GUID)
    out = Emitted()
    assert on_time(state, Rules(), T0, out) is state and next_deadline_ms(state, Rules()) is None
    assert on_hit(state, make_hit(T0, hid=1), Rules(), 0, out) is state


def test_occurred_ms_given_by_the_caller_places_the_hit_as_its_own_time_does() -> None:
    rules = Rules()
    hits = [make_hit(T0, hid=1), make_hit(T0 + 5 * MIN, hid=2), make_hit(T0 + 50 * MIN, hid=3), make_hit(T0 + MIN, hid=4)]
    plain, given = Emitted(), Emitted()
    a = b = None
    for n, hit in enumerate(hits):
        a = on_hit(a, hit, rules, T0, plain, offset=n)
        b = on_hit(b, hit, rules, T0, given, offset=n, occurred_ms=to_ms(hit.occurred_at))
    assert plain.sessions == given.sessions and plain.records == given.records
    assert len(plain.records) == 4 and a == b


def test_a_clear_within_the_timeout_of_a_session_closed_by_time_relabels_it() -> None:
    # Event time (another device) closed the session; the clear happened 10 min after its last
    # hit, so in time order storage was cleared while it was still going on.
    part = Partition()
    part.hit(make_hit(T0, hid=1))
    part.advance(T0 + 3 * HOUR)
    assert [s["end_reason"] for s in part.sessions()] == ["inactivity"]
    part.close(close_record(GUID, T0 + 10 * MIN))
    assert [s["end_reason"] for s in part.sessions()] == ["storage_cleared"]


def test_hits_around_a_clear_are_placed_as_time_order_has_them() -> None:
    part = Partition()
    part.hit(make_hit(T0, hid=1))
    part.close(close_record(GUID, T0 + 5 * MIN))
    part.hit(make_hit(T0 + 8 * MIN, hid=2))   # after the clear: a new session
    part.hit(make_hit(T0 + 3 * MIN, hid=3))   # before it, late: joins the cleared session
    part.finish()
    assert [(s["hits"], s["end_reason"]) for s in part.sessions()] == [(2, "storage_cleared"), (1, "inactivity")]


def test_a_mark_holds_the_hit_s_fields_whether_read_from_the_struct_or_the_model() -> None:
    """`_mark` reads a msgspec HitView by position (one C call) and any other hit by name: both
    give each Mark field the hit's value of that name."""
    from schemas.hit import Hit
    from sessionizer.machine import _mark
    from sessionizer.state import Mark

    view = make_hit(T0 + 1, hid=7, type="event", url="https://www.oakridge-apts.com/apply?gclid=Cj0K", referrer="https://www.google.com/search?q=x", ip="198.51.100.0",
                    utm={"source": "google", "medium": "cpc", "campaign": "spring", "term": "t", "content": "c",
                         "id": "u1"}, datacenter=True)
    model = Hit.model_validate(view.wire())
    by_position, by_name = _mark(view, T0 + 1), _mark(model, T0 + 1)
    assert type(view) is not type(model) and by_position == by_name
    expected = {"t": T0 + 1, "us": view.occurred_at.microsecond % 1000, "is_event": True}
    for name in Mark._fields:
        assert by_position[Mark._fields.index(name)] == expected.get(name, getattr(view, name, None)), name
    assert len(set(by_position[9:17])) == 8  # every campaign field its own value: none read from a neighbour
