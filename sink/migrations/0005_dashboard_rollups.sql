-- 0005: aggregates for the dashboard (`touchstream dashboard`): exact, and at most one drain
-- interval behind the rows.
--
-- At 1M sessions and 10M hits the views of 0002 take seconds per question (bench/dashboard_bench.py),
-- so the dashboard reads the rollup_* tables below. They are kept off the sink's write path:
--
--   1. the rows' transaction only queues keys, into plain (logged) tables: the sink's writer COPYs
--      the devices whose sessions it inserted, updated or deleted to rollup_pending_devices and the
--      keys of the conversions among its new events to rollup_pending_conversions (sink/rollups.py).
--      Statement triggers queue what other statements change (DELETE on sessions and events, UPDATE
--      on events: a merge's moves, `touchstream forget`; a conversion name added or removed), and
--      retention queues the conversions of the days it drops. Triggers on the sink's own INSERTs
--      would cost the write path far more: a transition table copies every row, and turns COPY into
--      a partitioned table into row-by-row inserts (docs/dashboard.md has the figures);
--   2. rollup_drain(), called by one sink worker at a time every TOUCHSTREAM_SINK_ROLLUP_INTERVAL_S
--      (sink/rollups.py) in REPEATABLE READ transactions of its own, takes keys out of the queue and
--      folds the state they point at into the rollups: a device's sessions against
--      rollup_session_facts (what the rollups hold of each session), a conversion re-read from
--      `events`, a device's credits recomputed whole when its touches or conversions changed, its
--      days recomputed from `sessions`.
--
-- rollup_state.as_of says how fresh the rollups are: every row committed before it is in them.
-- Replays (nothing changes), late hits that move or merge sessions, `touchstream forget` and
-- retention all leave the rollups equal to the views after a drain;
-- tests/integration/dashboard/test_rollups.py checks exactly that.
--
-- Not seen: TRUNCATE, day partitions dropped by hand, and sessions or events inserted by anything
-- but the sink's writer (which queues them). `SELECT rollup_rebuild()` (as the owner) recomputes
-- everything from the tables.
--
-- Days are UTC days. Credits are summed as numeric, so sums are exact whatever the order.

-- --- lookback windows the attribution rollups are kept for ---------------------------------------

CREATE TABLE rollup_lookbacks (days smallint PRIMARY KEY CHECK (days BETWEEN 1 AND 365));
INSERT INTO rollup_lookbacks (days) VALUES (7), (30), (90);

-- --- the rollups ------------------------------------------------------------------------------

-- Sessions by the UTC day they started, with every dimension the dashboard filters sessions by.
CREATE TABLE rollup_sessions_daily (
    day           date NOT NULL,
    site          text NOT NULL,
    channel       text NOT NULL,
    utm_source    text,
    utm_campaign  text,
    is_bot        boolean NOT NULL,
    status        text NOT NULL,
    sessions      bigint NOT NULL,
    pageviews     bigint NOT NULL,
    events        bigint NOT NULL,
    bounces       bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (day, site, channel, utm_source, utm_campaign, is_bot, status)
);

CREATE TABLE rollup_landing_daily (
    day           date NOT NULL,
    site          text NOT NULL,
    is_bot        boolean NOT NULL,
    landing_path  text NOT NULL,
    sessions      bigint NOT NULL,
    bounces       bigint NOT NULL,
    UNIQUE (day, site, is_bot, landing_path)
);

-- Distinct devices (non-bot sessions) per day and channel; site NULL: all sites together.
CREATE TABLE rollup_devices_daily (
    day      date NOT NULL,
    site     text,
    channel  text NOT NULL,
    devices  bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (day, site, channel)
);

-- Distinct devices over any range of days, from one small table: each (device, day with a
-- non-bot session) is counted under its previous such day (prev_day, NULL for its first). The
-- devices of days [a, b] are then exactly the rows with a <= day <= b and prev_day < a (or NULL):
-- each device once, at its first day in the range. site NULL: all sites together.
CREATE TABLE rollup_device_reach (
    site      text,
    day       date NOT NULL,
    prev_day  date,
    devices   bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (site, day, prev_day)
);

-- The `conversions` view, materialised (and indexed by device).
CREATE TABLE rollup_conversions (
    conversion_hit_id  uuid NOT NULL,
    converted_at       timestamptz NOT NULL,
    guid               uuid NOT NULL,
    conversion_name    text NOT NULL,
    module             text,
    site               text NOT NULL,
    session_id         uuid NOT NULL,
    PRIMARY KEY (converted_at, conversion_hit_id)
);
CREATE INDEX rollup_conversions_guid ON rollup_conversions (guid);

CREATE TABLE rollup_conversions_daily (
    day              date NOT NULL,
    site             text NOT NULL,
    conversion_name  text NOT NULL,
    module           text,
    conversions      bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (day, site, conversion_name, module)
);

-- `attribution_credits` materialised for every lookback of rollup_lookbacks (90 days: the view's
-- rows exactly), one row per conversion and touch with the six models' credits side by side.
CREATE TABLE rollup_credits (
    lookback_days      smallint NOT NULL,
    conversion_hit_id  uuid NOT NULL,
    converted_at       timestamptz NOT NULL,
    guid               uuid NOT NULL,
    conversion_name    text NOT NULL,
    module             text,
    site               text NOT NULL,
    session_id         uuid NOT NULL,
    touch_index        bigint NOT NULL,
    touch_count        bigint NOT NULL,
    touch_started_at   timestamptz NOT NULL,
    channel            text NOT NULL,
    utm_source         text,
    utm_medium         text,
    utm_campaign       text,
    first_touch        double precision NOT NULL,
    last_touch         double precision NOT NULL,
    last_non_direct    double precision NOT NULL,
    linear             double precision NOT NULL,
    position_based     double precision NOT NULL,
    time_decay         double precision NOT NULL,
    PRIMARY KEY (lookback_days, converted_at, conversion_hit_id, session_id)
);
CREATE INDEX rollup_credits_guid ON rollup_credits (guid);

-- Credit per conversion day and every grouping the dashboard offers.
CREATE TABLE rollup_attribution_daily (
    day              date NOT NULL,
    lookback_days    smallint NOT NULL,
    site             text NOT NULL,
    conversion_name  text NOT NULL,
    module           text,
    channel          text NOT NULL,
    utm_source       text,
    utm_campaign     text,
    first_touch      numeric NOT NULL,
    last_touch       numeric NOT NULL,
    last_non_direct  numeric NOT NULL,
    linear           numeric NOT NULL,
    position_based   numeric NOT NULL,
    time_decay       numeric NOT NULL,
    UNIQUE NULLS NOT DISTINCT (day, lookback_days, site, conversion_name, module, channel, utm_source, utm_campaign)
);

-- What the rollups hold of each session: a drain compares a device's sessions with its rows here to
-- find what changed (signed: -1 the row as folded before, +1 the row as it is now).
CREATE TABLE rollup_session_facts (
    session_id     uuid PRIMARY KEY,
    guid           uuid NOT NULL,
    started_at     timestamptz NOT NULL,
    session_index  integer NOT NULL,
    site           text NOT NULL,
    channel        text NOT NULL,
    utm_source     text,
    utm_medium     text,
    utm_campaign   text,
    is_bot         boolean NOT NULL,
    status         text NOT NULL,
    landing_path   text NOT NULL,
    pageviews      integer NOT NULL,
    events         integer NOT NULL,
    is_bounce      boolean NOT NULL
);
CREATE INDEX rollup_session_facts_guid ON rollup_session_facts (guid);

-- --- the queue: keys written in the rows' transaction, taken out by rollup_drain() ----------------

-- Logged: a queued key lives past its transaction, so a crash must not lose it. No index, no
-- default, no guid with a conversion: each would cost the write path on every row, and a drain
-- reads the queue whole anyway.
CREATE TABLE rollup_pending_devices (guid uuid NOT NULL);
CREATE TABLE rollup_pending_conversions (converted_at timestamptz NOT NULL, conversion_hit_id uuid NOT NULL);

-- One row: every row committed before `as_of` is in the rollups (the start of the last drain that
-- left nothing queued behind it).
CREATE TABLE rollup_state (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    as_of   timestamptz NOT NULL
);
INSERT INTO rollup_state (as_of) VALUES (now());

-- --- computing credits ----------------------------------------------------------------------------

-- attribution_touches + attribution_credits (0002) for the conversions of the devices `guids` and
-- every lookback, with the same expressions and window orders, so each credit is the very same
-- double the view gives (tests compare them touch by touch).
-- Planned to walk the indexes from the devices (rollup_conversions by guid, sessions by guid and
-- start), like the drain's steps below.
CREATE FUNCTION rollup_credits_of(guids uuid[]) RETURNS SETOF rollup_credits
LANGUAGE sql STABLE SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $fn$
WITH touches AS (
    SELECT l.days AS lookback_days, c.conversion_hit_id, c.converted_at, c.guid, c.conversion_name, c.module, c.site,
           s.session_id, s.started_at AS touch_started_at, s.channel, s.utm_source, s.utm_medium, s.utm_campaign,
           row_number() OVER (PARTITION BY l.days, c.conversion_hit_id, c.converted_at
                              ORDER BY s.started_at, s.session_index, s.session_id) AS touch_index,
           count(*) OVER (PARTITION BY l.days, c.conversion_hit_id, c.converted_at) AS touch_count,
           power(2.0::double precision,
                 -extract(epoch FROM (c.converted_at - s.started_at))::double precision / 604800.0) AS decay_weight
    -- a join, not `c.guid = ANY(guids)`: an array parameter is searched row by row, which took
    -- seconds per fold once rollup_conversions held 40,000 rows (bench/sink_bench.py)
    FROM (SELECT DISTINCT g FROM unnest(guids) g) d(guid)
    JOIN rollup_conversions c ON c.guid = d.guid
    CROSS JOIN rollup_lookbacks l
    JOIN sessions s
      ON s.guid = c.guid
     AND s.started_at <= c.converted_at
     AND s.started_at >= c.converted_at - make_interval(days => l.days)
), windowed AS (
    SELECT t.*,
           coalesce(max(t.touch_index) FILTER (WHERE t.channel IS DISTINCT FROM 'Direct') OVER w,
                    t.touch_count) AS last_non_direct_index,
           sum(t.decay_weight) OVER w AS decay_total
    FROM touches t
    WINDOW w AS (PARTITION BY t.lookback_days, t.conversion_hit_id, t.converted_at)
)
SELECT lookback_days, conversion_hit_id, converted_at, guid, conversion_name, module, site, session_id,
       touch_index, touch_count, touch_started_at, channel, utm_source, utm_medium, utm_campaign,
       CASE WHEN touch_index = 1 THEN 1.0 ELSE 0.0 END::double precision,
       CASE WHEN touch_index = touch_count THEN 1.0 ELSE 0.0 END::double precision,
       CASE WHEN touch_index = last_non_direct_index THEN 1.0 ELSE 0.0 END::double precision,
       1.0::double precision / touch_count,
       CASE WHEN touch_count = 1 THEN 1.0
            WHEN touch_count = 2 THEN 0.5
            WHEN touch_index IN (1, touch_count) THEN 0.4
            ELSE 0.2 / (touch_count - 2) END::double precision,
       decay_weight / decay_total
FROM windowed
$fn$;

-- --- the drain: queued keys -> rollups ------------------------------------------------------------

-- The advisory lock every drain (and rebuild) of this schema holds: one folds at a time. The sink's
-- drainer takes it at session level before its transactions begin (sink/rollups.py), so their
-- snapshots see the previous drain's commit.
CREATE FUNCTION rollup_lock_key() RETURNS bigint
LANGUAGE sql STABLE SET search_path = {{schema}}, pg_temp AS $fn$
SELECT hashtextextended('touchstream.rollups.' || current_schema(), 0)
$fn$;

-- What one drain works on, dropped at its commit (so: one drain per transaction): the devices and
-- conversion keys it takes from the queue, and the signed changes of conversions, sessions and
-- credits it folds.
CREATE FUNCTION rollup_work_tables() RETURNS void
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    CREATE TEMP TABLE rollup_work_devices (guid uuid PRIMARY KEY) ON COMMIT DROP;
    CREATE TEMP TABLE rollup_work_keys (converted_at timestamptz, conversion_hit_id uuid,
                                        PRIMARY KEY (converted_at, conversion_hit_id)) ON COMMIT DROP;
    CREATE TEMP TABLE rollup_work_conversions (sign integer NOT NULL, LIKE rollup_conversions) ON COMMIT DROP;
    CREATE TEMP TABLE rollup_work_sessions (sign integer NOT NULL, LIKE rollup_session_facts) ON COMMIT DROP;
    CREATE TEMP TABLE rollup_work_credits (sign integer NOT NULL, LIKE rollup_credits) ON COMMIT DROP;
END
$fn$;

-- The plans below walk the indexes from the drained devices and keys (rollup_conversions by key,
-- sessions and facts by guid, events by key): left to statistics, a rollup table filled since its
-- last ANALYZE made the planner scan it whole inside a nested loop (seconds per fold). The drain
-- runs with jit off: those settings price the plans so high that every statement was JIT-compiled,
-- 0.3-0.9 s each.

-- Conversions of the drained keys: their rows out, their rows as `events` has them now in (signed
-- in rollup_work_conversions, whose devices get their credits recomputed), the difference carried
-- to the daily rollup.
CREATE FUNCTION rollup_fold_conversions() RETURNS void
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $fn$
BEGIN
    WITH gone AS (
        DELETE FROM rollup_conversions r USING pg_temp.rollup_work_keys k
        WHERE r.converted_at = k.converted_at AND r.conversion_hit_id = k.conversion_hit_id
        RETURNING r.*
    )
    INSERT INTO pg_temp.rollup_work_conversions SELECT -1, g.* FROM gone g;
    WITH added AS (
        INSERT INTO rollup_conversions (conversion_hit_id, converted_at, guid, conversion_name, module, site, session_id)
        SELECT e.hit_id, e.occurred_at, e.guid, e.name, e.module, e.site, e.session_id
        FROM pg_temp.rollup_work_keys k
        JOIN events e ON e.occurred_at = k.converted_at AND e.hit_id = k.conversion_hit_id
        JOIN conversion_events c ON c.name = e.name
        RETURNING *
    )
    INSERT INTO pg_temp.rollup_work_conversions SELECT 1, a.* FROM added a;

    INSERT INTO rollup_conversions_daily AS d (day, site, conversion_name, module, conversions)
    SELECT (converted_at AT TIME ZONE 'UTC')::date, site, conversion_name, module, sum(sign)
    FROM pg_temp.rollup_work_conversions GROUP BY 1, 2, 3, 4 HAVING sum(sign) <> 0
    ON CONFLICT (day, site, conversion_name, module) DO UPDATE SET conversions = d.conversions + excluded.conversions;
END
$fn$;

-- The drained devices' sessions against their facts: what does not cancel out is what changed
-- (a session's old row -1, its new row +1; a deleted one only -1, a new one only +1). The facts
-- then take the new rows.
CREATE FUNCTION rollup_session_changes() RETURNS void
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $fn$
BEGIN
    INSERT INTO pg_temp.rollup_work_sessions
    SELECT sum(sign), session_id, guid, started_at, session_index, site, channel, utm_source, utm_medium, utm_campaign,
           is_bot, status, landing_path, pageviews, events, is_bounce
    FROM (
        SELECT -1 AS sign, f.*
        FROM pg_temp.rollup_work_devices d JOIN rollup_session_facts f ON f.guid = d.guid
        UNION ALL
        SELECT 1, s.session_id, s.guid, s.started_at, s.session_index, s.site, s.channel, s.utm_source, s.utm_medium,
               s.utm_campaign, s.is_bot, s.status, s.landing_path, s.pageviews, s.events, s.is_bounce
        FROM pg_temp.rollup_work_devices d JOIN sessions s ON s.guid = d.guid
    ) both_
    GROUP BY session_id, guid, started_at, session_index, site, channel, utm_source, utm_medium, utm_campaign, is_bot,
             status, landing_path, pageviews, events, is_bounce
    HAVING sum(sign) <> 0;

    DELETE FROM rollup_session_facts f USING pg_temp.rollup_work_sessions c
    WHERE c.sign < 0 AND f.session_id = c.session_id;
    INSERT INTO rollup_session_facts
    SELECT session_id, guid, started_at, session_index, site, channel, utm_source, utm_medium, utm_campaign, is_bot,
           status, landing_path, pageviews, events, is_bounce
    FROM pg_temp.rollup_work_sessions WHERE sign > 0;
END
$fn$;

-- The additive session rollups, from the signed changes.
CREATE FUNCTION rollup_fold_sessions() RETURNS void
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    INSERT INTO rollup_sessions_daily AS r
           (day, site, channel, utm_source, utm_campaign, is_bot, status, sessions, pageviews, events, bounces)
    SELECT (started_at AT TIME ZONE 'UTC')::date, site, channel, utm_source, utm_campaign, is_bot, status,
           sum(sign), sum(sign * pageviews), sum(sign * events), coalesce(sum(sign) FILTER (WHERE is_bounce), 0)
    FROM pg_temp.rollup_work_sessions
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    HAVING sum(sign) <> 0 OR sum(sign * pageviews) <> 0 OR sum(sign * events) <> 0
        OR coalesce(sum(sign) FILTER (WHERE is_bounce), 0) <> 0
    ON CONFLICT (day, site, channel, utm_source, utm_campaign, is_bot, status) DO UPDATE
    SET sessions = r.sessions + excluded.sessions, pageviews = r.pageviews + excluded.pageviews,
        events = r.events + excluded.events, bounces = r.bounces + excluded.bounces;

    INSERT INTO rollup_landing_daily AS r (day, site, is_bot, landing_path, sessions, bounces)
    SELECT (started_at AT TIME ZONE 'UTC')::date, site, is_bot, landing_path, sum(sign),
           coalesce(sum(sign) FILTER (WHERE is_bounce), 0)
    FROM pg_temp.rollup_work_sessions
    GROUP BY 1, 2, 3, 4
    HAVING sum(sign) <> 0 OR coalesce(sum(sign) FILTER (WHERE is_bounce), 0) <> 0
    ON CONFLICT (day, site, is_bot, landing_path) DO UPDATE
    SET sessions = r.sessions + excluded.sessions, bounces = r.bounces + excluded.bounces;
END
$fn$;

-- Credit rows in rollup_work_credits (signed) summed into rollup_attribution_daily.
CREATE FUNCTION rollup_add_credits() RETURNS void
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    INSERT INTO rollup_attribution_daily AS d
           (day, lookback_days, site, conversion_name, module, channel, utm_source, utm_campaign,
            first_touch, last_touch, last_non_direct, linear, position_based, time_decay)
    SELECT (r.converted_at AT TIME ZONE 'UTC')::date, r.lookback_days, r.site, r.conversion_name, r.module, r.channel,
           r.utm_source, r.utm_campaign,
           sum(r.sign * r.first_touch::numeric), sum(r.sign * r.last_touch::numeric),
           sum(r.sign * r.last_non_direct::numeric), sum(r.sign * r.linear::numeric),
           sum(r.sign * r.position_based::numeric), sum(r.sign * r.time_decay::numeric)
    FROM pg_temp.rollup_work_credits r
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (day, lookback_days, site, conversion_name, module, channel, utm_source, utm_campaign) DO UPDATE
    SET first_touch = d.first_touch + excluded.first_touch,
        last_touch = d.last_touch + excluded.last_touch,
        last_non_direct = d.last_non_direct + excluded.last_non_direct,
        linear = d.linear + excluded.linear,
        position_based = d.position_based + excluded.position_based,
        time_decay = d.time_decay + excluded.time_decay;
    TRUNCATE pg_temp.rollup_work_credits;
END
$fn$;

-- Credits of the devices `guids`: recomputed whole, and the difference carried to the daily rollup.
CREATE FUNCTION rollup_refresh_credits(guids uuid[]) RETURNS void
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $fn$
BEGIN
    WITH gone AS (DELETE FROM rollup_credits WHERE guid IN (SELECT unnest(guids)) RETURNING *)
    INSERT INTO pg_temp.rollup_work_credits SELECT -1, g.* FROM gone g;
    WITH added AS (INSERT INTO rollup_credits SELECT * FROM rollup_credits_of(guids) RETURNING *)
    INSERT INTO pg_temp.rollup_work_credits SELECT 1, a.* FROM added a;
    PERFORM rollup_add_credits();
END
$fn$;

-- Device counts of the devices whose non-bot (day, site, channel) set changed. Their state before
-- the drain is `sessions` now minus the drain's signed changes.
CREATE FUNCTION rollup_refresh_devices(guids uuid[]) RETURNS void
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp SET enable_seqscan = off AS $fn$
BEGIN
    WITH chg AS (
        SELECT guid, (started_at AT TIME ZONE 'UTC')::date AS day, site, channel, sum(sign)::bigint AS d
        FROM pg_temp.rollup_work_sessions WHERE NOT is_bot
        GROUP BY 1, 2, 3, 4 HAVING sum(sign) <> 0
    ), cur AS (  -- (guid = ANY(guids): index probes on sessions_guid_started_at)
        SELECT s.guid, (s.started_at AT TIME ZONE 'UTC')::date AS day, s.site, s.channel, count(*)::bigint AS n
        FROM sessions s WHERE s.guid = ANY(guids) AND NOT s.is_bot
        GROUP BY 1, 2, 3, 4
    ), states AS (  -- (device, day, site, channel): sessions after (new_n) and before (old_n)
        SELECT coalesce(c.guid, g.guid) AS guid, coalesce(c.day, g.day) AS day, coalesce(c.site, g.site) AS site,
               coalesce(c.channel, g.channel) AS channel,
               coalesce(c.n, 0) AS new_n, coalesce(c.n, 0) - coalesce(g.d, 0) AS old_n
        FROM cur c FULL JOIN chg g ON c.guid = g.guid AND c.day = g.day AND c.site = g.site AND c.channel = g.channel
    ), per_channel AS (  -- per site, and all sites (site NULL)
        SELECT guid, day, site, channel, (sum(new_n) > 0)::int AS now_, (sum(old_n) > 0)::int AS was
        FROM states GROUP BY GROUPING SETS ((guid, day, site, channel), (guid, day, channel))
    ), daily AS (
        INSERT INTO rollup_devices_daily AS r (day, site, channel, devices)
        SELECT day, site, channel, sum(now_ - was) FROM per_channel
        GROUP BY 1, 2, 3 HAVING sum(now_ - was) <> 0
        ON CONFLICT (day, site, channel) DO UPDATE SET devices = r.devices + excluded.devices
        RETURNING 1
    ), days AS (  -- (device, site|NULL, day) present after / before
        SELECT guid, site, day, sum(new_n) > 0 AS now_, sum(old_n) > 0 AS was
        FROM states GROUP BY GROUPING SETS ((guid, site, day), (guid, day))
    ), pairs AS (
        SELECT site, day, lag(day) OVER (PARTITION BY guid, site ORDER BY day) AS prev_day, 1 AS n
        FROM days WHERE now_
        UNION ALL
        SELECT site, day, lag(day) OVER (PARTITION BY guid, site ORDER BY day), -1
        FROM days WHERE was
    )
    INSERT INTO rollup_device_reach AS r (site, day, prev_day, devices)
    SELECT site, day, prev_day, sum(n) FROM pairs  -- (the `daily` CTE runs whether read or not)
    GROUP BY 1, 2, 3 HAVING sum(n) <> 0
    ON CONFLICT (site, day, prev_day) DO UPDATE SET devices = r.devices + excluded.devices;
END
$fn$;

-- One drain step, in the caller's REPEATABLE READ transaction: at most `batch` devices and `batch`
-- conversion keys taken from the queue and folded into the rollups. `complete`: nothing was left
-- queued, and rollup_state.as_of moved to this transaction's start. Run by sink/rollups.py, which
-- loops until complete.
--
-- Why any part of the queue can be folded on its own: what is folded is the state, not the queued
-- key. A device's sessions are compared with its facts, a conversion is re-read, credits are
-- recomputed whole, all from this one snapshot; and a change is queued in its own transaction, so
-- a snapshot that sees the change sees its key too. A device folded before its key is taken is
-- simply found unchanged then.
CREATE FUNCTION rollup_drain(batch integer, OUT drained_devices integer, OUT changed_sessions integer,
                             OUT drained_conversions integer, OUT complete boolean, OUT fresh_as_of timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp SET jit = off AS $fn$
DECLARE
    touched uuid[];
BEGIN
    -- One snapshot for everything read below: the queue and the rows it points at agree.
    IF current_setting('transaction_isolation') NOT IN ('repeatable read', 'serializable') THEN
        RAISE EXCEPTION 'rollup_drain() runs in a REPEATABLE READ transaction'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF batch < 1 THEN
        RAISE EXCEPTION 'batch must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(rollup_lock_key());
    PERFORM rollup_work_tables();

    -- One more than asked for says whether anything is left.
    INSERT INTO pg_temp.rollup_work_devices SELECT DISTINCT guid FROM rollup_pending_devices LIMIT batch + 1;
    GET DIAGNOSTICS drained_devices = ROW_COUNT;
    INSERT INTO pg_temp.rollup_work_keys
    SELECT DISTINCT converted_at, conversion_hit_id FROM rollup_pending_conversions LIMIT batch + 1;
    GET DIAGNOSTICS drained_conversions = ROW_COUNT;
    complete := drained_devices <= batch AND drained_conversions <= batch;
    IF complete THEN
        DELETE FROM rollup_pending_devices;  -- (what this snapshot sees: later commits stay queued)
        DELETE FROM rollup_pending_conversions;
    ELSE
        DELETE FROM pg_temp.rollup_work_devices WHERE guid = (SELECT guid FROM pg_temp.rollup_work_devices LIMIT 1)
                                                  AND drained_devices > batch;
        DELETE FROM pg_temp.rollup_work_keys WHERE (converted_at, conversion_hit_id) =
            (SELECT converted_at, conversion_hit_id FROM pg_temp.rollup_work_keys LIMIT 1) AND drained_conversions > batch;
        drained_devices := least(drained_devices, batch);
        drained_conversions := least(drained_conversions, batch);
        DELETE FROM rollup_pending_devices p USING pg_temp.rollup_work_devices d WHERE p.guid = d.guid;
        DELETE FROM rollup_pending_conversions p USING pg_temp.rollup_work_keys k
        WHERE p.converted_at = k.converted_at AND p.conversion_hit_id = k.conversion_hit_id;
    END IF;
    ANALYZE pg_temp.rollup_work_devices, pg_temp.rollup_work_keys;

    PERFORM rollup_fold_conversions();
    PERFORM rollup_session_changes();
    SELECT count(*) FILTER (WHERE sign > 0) INTO changed_sessions FROM pg_temp.rollup_work_sessions;
    PERFORM rollup_fold_sessions();
    -- A device's credits move when one of its touches appears, goes, or changes what attribution
    -- reads of it (start, order, channel, utm), or when one of its conversions was queued.
    touched := ARRAY(
        SELECT guid FROM pg_temp.rollup_work_sessions
        GROUP BY guid, session_id, started_at, session_index, channel, utm_source, utm_medium, utm_campaign
        HAVING sum(sign) <> 0
        UNION SELECT guid FROM pg_temp.rollup_work_conversions);
    IF cardinality(touched) > 0 THEN
        PERFORM rollup_refresh_credits(touched);
    END IF;
    -- Devices whose non-bot (day, site, channel) set changed.
    touched := ARRAY(SELECT DISTINCT guid FROM (
        SELECT guid FROM pg_temp.rollup_work_sessions WHERE NOT is_bot
        GROUP BY guid, (started_at AT TIME ZONE 'UTC')::date, site, channel HAVING sum(sign) <> 0) changed);
    IF cardinality(touched) > 0 THEN
        PERFORM rollup_refresh_devices(touched);
    END IF;
    IF complete THEN
        -- now(): this transaction's start, before its snapshot; whatever committed earlier is folded.
        UPDATE rollup_state SET as_of = greatest(rollup_state.as_of, now()) RETURNING rollup_state.as_of INTO fresh_as_of;
    END IF;
END
$fn$;

-- --- what queues keys besides the sink's writer ---------------------------------------------------------

-- Deleted sessions (a merge's retraction, `touchstream forget`): their devices.
CREATE FUNCTION rollup_sessions_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    INSERT INTO rollup_pending_devices (guid) SELECT DISTINCT guid FROM old_rows;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER rollup_sessions_deleted AFTER DELETE ON sessions
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_sessions_deleted();

-- Events updated (a merge's moves re-point session_id) or deleted (`forget`): the keys of those that
-- are conversions now, or were counted as one. (The sink's INSERTs are queued by its writer.)
CREATE FUNCTION rollup_events_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_pending_conversions (converted_at, conversion_hit_id)
        SELECT r.occurred_at, r.hit_id FROM new_rows r JOIN conversion_events c ON c.name = r.name;
    END IF;
    INSERT INTO rollup_pending_conversions (converted_at, conversion_hit_id)
    SELECT r.occurred_at, r.hit_id FROM old_rows r
    WHERE r.name IN (SELECT name FROM conversion_events)
       OR EXISTS (SELECT 1 FROM rollup_conversions c
                  WHERE c.converted_at = r.occurred_at AND c.conversion_hit_id = r.hit_id);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER rollup_events_updated AFTER UPDATE ON events
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_events_changed();
CREATE TRIGGER rollup_events_deleted AFTER DELETE ON events
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_events_changed();

-- A name added to or removed from conversion_events: every event of that name is queued. The SHARE
-- lock waits for the sink's transactions that are writing events and holds new ones off until this
-- one commits: an event written meanwhile is then either seen here or sees the new name when its
-- writer queues it.
CREATE FUNCTION rollup_conversion_names_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    LOCK TABLE events IN SHARE MODE;
    EXECUTE format(
        'INSERT INTO rollup_pending_conversions (converted_at, conversion_hit_id)
         SELECT e.occurred_at, e.hit_id FROM events e WHERE e.name IN (%s)',
        CASE TG_OP WHEN 'INSERT' THEN 'SELECT name FROM new_rows'
                   WHEN 'DELETE' THEN 'SELECT name FROM old_rows'
                   ELSE 'SELECT name FROM new_rows UNION SELECT name FROM old_rows' END);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER rollup_conversion_names_inserted AFTER INSERT ON conversion_events
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_conversion_names_changed();
CREATE TRIGGER rollup_conversion_names_updated AFTER UPDATE ON conversion_events
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_conversion_names_changed();
CREATE TRIGGER rollup_conversion_names_deleted AFTER DELETE ON conversion_events
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_conversion_names_changed();

-- --- retention and rebuild ----------------------------------------------------------------------------

-- Dropping day partitions of `events` fires no trigger: the wrapper queues the conversions the
-- rollups hold for those days, which the next drain finds gone. After the drop, whose lock waits for
-- a drain that read those partitions, so this sees what that drain added.
ALTER FUNCTION drop_day_partitions_before(text, date) RENAME TO drop_day_partitions_before_0001;
REVOKE ALL ON FUNCTION drop_day_partitions_before_0001(text, date) FROM PUBLIC, {{writer_role}};

CREATE FUNCTION drop_day_partitions_before(parent text, cutoff date) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $fn$
DECLARE
    dropped text[];
BEGIN
    dropped := drop_day_partitions_before_0001(parent, cutoff);
    IF parent = 'events' AND cardinality(dropped) > 0 THEN
        INSERT INTO rollup_pending_conversions (converted_at, conversion_hit_id)
        SELECT converted_at, conversion_hit_id FROM rollup_conversions
        WHERE converted_at < cutoff::timestamp AT TIME ZONE 'UTC';
    END IF;
    RETURN dropped;
END
$fn$;
REVOKE ALL ON FUNCTION drop_day_partitions_before(text, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drop_day_partitions_before(text, date) TO {{writer_role}};

-- Every rollup recomputed from the tables, the queue emptied (first run, after a TRUNCATE, or after
-- sessions were written by something other than the sink). Owner only; run it in a transaction of
-- its own: it holds off the sink's writes (SHARE locks) while it reads.
CREATE FUNCTION rollup_rebuild() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp SET jit = off AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(rollup_lock_key());
    LOCK TABLE sessions, events, conversion_events IN SHARE MODE;
    PERFORM rollup_work_tables();
    DELETE FROM rollup_pending_devices;
    DELETE FROM rollup_pending_conversions;
    TRUNCATE rollup_sessions_daily, rollup_landing_daily, rollup_devices_daily, rollup_device_reach,
             rollup_conversions, rollup_conversions_daily, rollup_credits, rollup_attribution_daily,
             rollup_session_facts;
    INSERT INTO rollup_session_facts
    SELECT session_id, guid, started_at, session_index, site, channel, utm_source, utm_medium, utm_campaign, is_bot,
           status, landing_path, pageviews, events, is_bounce
    FROM sessions;
    INSERT INTO rollup_conversions (conversion_hit_id, converted_at, guid, conversion_name, module, site, session_id)
    SELECT conversion_hit_id, converted_at, guid, conversion_name, module, site, conversion_session_id FROM conversions;
    INSERT INTO rollup_conversions_daily (day, site, conversion_name, module, conversions)
    SELECT (converted_at AT TIME ZONE 'UTC')::date, site, conversion_name, module, count(*)
    FROM rollup_conversions GROUP BY 1, 2, 3, 4;
    INSERT INTO rollup_credits SELECT * FROM rollup_credits_of(ARRAY(SELECT DISTINCT guid FROM rollup_conversions));
    INSERT INTO pg_temp.rollup_work_credits SELECT 1, c.* FROM rollup_credits c;
    PERFORM rollup_add_credits();
    INSERT INTO rollup_sessions_daily
           (day, site, channel, utm_source, utm_campaign, is_bot, status, sessions, pageviews, events, bounces)
    SELECT (started_at AT TIME ZONE 'UTC')::date, site, channel, utm_source, utm_campaign, is_bot, status,
           count(*), sum(pageviews), sum(events), count(*) FILTER (WHERE is_bounce)
    FROM sessions GROUP BY 1, 2, 3, 4, 5, 6, 7;
    INSERT INTO rollup_landing_daily (day, site, is_bot, landing_path, sessions, bounces)
    SELECT (started_at AT TIME ZONE 'UTC')::date, site, is_bot, landing_path, count(*), count(*) FILTER (WHERE is_bounce)
    FROM sessions GROUP BY 1, 2, 3, 4;
    INSERT INTO rollup_devices_daily (day, site, channel, devices)
    SELECT (started_at AT TIME ZONE 'UTC')::date, site, channel, count(DISTINCT guid)
    FROM sessions WHERE NOT is_bot
    GROUP BY GROUPING SETS (((started_at AT TIME ZONE 'UTC')::date, site, channel),
                            ((started_at AT TIME ZONE 'UTC')::date, channel));
    INSERT INTO rollup_device_reach (site, day, prev_day, devices)
    SELECT site, day, prev_day, count(*)
    FROM (SELECT site, day, lag(day) OVER (PARTITION BY guid, site ORDER BY day) AS prev_day
          FROM (SELECT DISTINCT guid, site, (started_at AT TIME ZONE 'UTC')::date AS day FROM sessions WHERE NOT is_bot
                UNION ALL
                SELECT DISTINCT guid, NULL, (started_at AT TIME ZONE 'UTC')::date FROM sessions WHERE NOT is_bot) d) p
    GROUP BY 1, 2, 3;
    UPDATE rollup_state SET as_of = now();
END
$fn$;
REVOKE ALL ON FUNCTION rollup_rebuild() FROM PUBLIC;

SELECT rollup_rebuild();

-- --- who may do what ------------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION rollup_lock_key(), rollup_work_tables(), rollup_fold_conversions(), rollup_session_changes(),
                       rollup_fold_sessions(), rollup_add_credits(), rollup_refresh_credits(uuid[]),
                       rollup_refresh_devices(uuid[]), rollup_drain(integer), rollup_sessions_deleted(),
                       rollup_events_changed(), rollup_conversion_names_changed(), rollup_credits_of(uuid[])
   FROM PUBLIC;
-- The sink's writer queues keys and drains (rollup_drain runs as the owner).
GRANT INSERT ON rollup_pending_devices, rollup_pending_conversions TO {{writer_role}};
GRANT EXECUTE ON FUNCTION rollup_lock_key(), rollup_drain(integer) TO {{writer_role}};
GRANT SELECT ON rollup_lookbacks, rollup_sessions_daily, rollup_landing_daily, rollup_devices_daily,
                rollup_device_reach, rollup_conversions, rollup_conversions_daily, rollup_credits,
                rollup_attribution_daily, rollup_state
   TO {{analyst_role}};
