-- 0005: aggregates for the dashboard (`touchstream dashboard`), exact and current.
--
-- At 1M sessions and 10M hits the views of 0002 take seconds per question (bench/dashboard_bench.py),
-- so the dashboard reads the rollup_* tables below. They are maintained in the same transaction as
-- the rows they summarise, without touching the sink's Python:
--
--   1. statement-level AFTER triggers on sessions, events and conversion_events (transition
--      tables: one trigger per event, PostgreSQL allows no more) append signed copies of what
--      changed to the UNLOGGED rollup_pending_* tables (plain inserts: concurrent sink workers never
--      wait for each other there) and mark the transaction in rollup_pending_folds;
--   2. a DEFERRED constraint trigger on that mark fires once, at COMMIT, and folds the pending rows
--      into the rollups under one advisory lock (rollup_fold). Only that short fold is serialised
--      between writers, and since every fold takes the same single lock, folds cannot deadlock.
--
-- What is recomputed rather than added up: a conversion (from `events`, on its key), a device's
-- credits (from rollup_conversions + sessions, for every device whose touches or conversions
-- changed), and a device's days (from `sessions`, with the transaction's own changes taken back
-- out to get the state before). So replays (nothing changes: nothing is pending), late hits that
-- move or merge sessions, and `touchstream forget` (DELETEs) all keep the rollups equal to the
-- views; tests/integration/dashboard/test_rollups.py checks exactly that.
--
-- Not seen by triggers: TRUNCATE, and day partitions dropped by hand. Retention drops through
-- drop_day_partitions_before, which is wrapped below. `SELECT rollup_rebuild()` (as the owner)
-- recomputes everything from the tables.
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

-- --- what a transaction changed, until its fold at COMMIT -----------------------------------------

CREATE UNLOGGED TABLE rollup_pending_sessions (
    txid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    sign           smallint NOT NULL,
    guid           uuid NOT NULL,
    session_id     uuid NOT NULL,
    started_at     timestamptz NOT NULL,
    session_index  integer NOT NULL,
    day            date NOT NULL,
    site           text NOT NULL,
    channel        text NOT NULL,
    utm_source     text,
    utm_medium     text,
    utm_campaign   text,
    is_bot         boolean NOT NULL,
    status         text NOT NULL,
    landing_path   text NOT NULL,
    pageviews      bigint NOT NULL,
    events         bigint NOT NULL,
    bounce         boolean NOT NULL
);
CREATE INDEX rollup_pending_sessions_txid ON rollup_pending_sessions (txid);

CREATE UNLOGGED TABLE rollup_pending_conversions (
    txid               xid8 NOT NULL DEFAULT pg_current_xact_id(),
    converted_at       timestamptz NOT NULL,
    conversion_hit_id  uuid NOT NULL,
    guid               uuid NOT NULL
);
CREATE INDEX rollup_pending_conversions_txid ON rollup_pending_conversions (txid);

CREATE UNLOGGED TABLE rollup_pending_folds (txid xid8 PRIMARY KEY DEFAULT pg_current_xact_id());

-- --- computing credits ----------------------------------------------------------------------------

-- attribution_touches + attribution_credits (0002) for the conversions of the devices `guids` and
-- every lookback, with the same expressions and window orders, so each credit is the very same
-- double the view gives (tests compare them touch by touch).
-- The fold's functions plan with these settings: a fold touches a few devices, so the right plan
-- always walks the indexes from them (rollup_conversions by guid, sessions by guid and start,
-- events by key). Left to statistics, a rollup table filled since its last ANALYZE made the planner
-- scan it whole inside a nested loop: seconds per sink batch (bench/sink_bench.py).
CREATE FUNCTION rollup_credits_of(guids uuid[]) RETURNS SETOF rollup_credits
LANGUAGE sql STABLE SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $fn$
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

-- Adds (sign 1) or takes away (sign -1) credit rows to rollup_attribution_daily.
CREATE FUNCTION rollup_add_credits(rows_ rollup_credits[], sign integer) RETURNS void
LANGUAGE sql AS $fn$
INSERT INTO rollup_attribution_daily AS d
       (day, lookback_days, site, conversion_name, module, channel, utm_source, utm_campaign,
        first_touch, last_touch, last_non_direct, linear, position_based, time_decay)
SELECT (r.converted_at AT TIME ZONE 'UTC')::date, r.lookback_days, r.site, r.conversion_name, r.module, r.channel,
       r.utm_source, r.utm_campaign,
       sign * sum(r.first_touch::numeric), sign * sum(r.last_touch::numeric), sign * sum(r.last_non_direct::numeric),
       sign * sum(r.linear::numeric), sign * sum(r.position_based::numeric), sign * sum(r.time_decay::numeric)
FROM unnest(rows_) r
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
ON CONFLICT (day, lookback_days, site, conversion_name, module, channel, utm_source, utm_campaign) DO UPDATE
SET first_touch = d.first_touch + excluded.first_touch,
    last_touch = d.last_touch + excluded.last_touch,
    last_non_direct = d.last_non_direct + excluded.last_non_direct,
    linear = d.linear + excluded.linear,
    position_based = d.position_based + excluded.position_based,
    time_decay = d.time_decay + excluded.time_decay
$fn$;

-- --- the fold: pending rows -> rollups ----------------------------------------------------------------

-- Conversions touched by the transaction: their old rows out, their rows as `events` has them now in.
CREATE FUNCTION rollup_fold_conversions(me xid8) RETURNS void
LANGUAGE sql SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $fn$
WITH keys AS (
    SELECT DISTINCT converted_at, conversion_hit_id FROM rollup_pending_conversions WHERE txid = me
), gone AS (
    DELETE FROM rollup_conversions r USING keys k
    WHERE r.converted_at = k.converted_at AND r.conversion_hit_id = k.conversion_hit_id
    RETURNING r.*
)
INSERT INTO rollup_conversions_daily AS d (day, site, conversion_name, module, conversions)
SELECT (converted_at AT TIME ZONE 'UTC')::date, site, conversion_name, module, -count(*)
FROM gone GROUP BY 1, 2, 3, 4
ON CONFLICT (day, site, conversion_name, module) DO UPDATE SET conversions = d.conversions + excluded.conversions;

WITH keys AS (
    SELECT DISTINCT converted_at, conversion_hit_id FROM rollup_pending_conversions WHERE txid = me
), added AS (
    INSERT INTO rollup_conversions (conversion_hit_id, converted_at, guid, conversion_name, module, site, session_id)
    SELECT e.hit_id, e.occurred_at, e.guid, e.name, e.module, e.site, e.session_id
    FROM keys k
    JOIN events e ON e.occurred_at = k.converted_at AND e.hit_id = k.conversion_hit_id
    JOIN conversion_events c ON c.name = e.name
    RETURNING *
)
INSERT INTO rollup_conversions_daily AS d (day, site, conversion_name, module, conversions)
SELECT (converted_at AT TIME ZONE 'UTC')::date, site, conversion_name, module, count(*)
FROM added GROUP BY 1, 2, 3, 4
ON CONFLICT (day, site, conversion_name, module) DO UPDATE SET conversions = d.conversions + excluded.conversions;
$fn$;

-- Credits of the devices `guids`: recomputed whole, and the difference carried to the daily rollup.
CREATE FUNCTION rollup_refresh_credits(guids uuid[]) RETURNS void
LANGUAGE sql SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $fn$
WITH gone AS (DELETE FROM rollup_credits WHERE guid IN (SELECT unnest(guids)) RETURNING *)
SELECT rollup_add_credits(ARRAY(SELECT ROW(g.*)::rollup_credits FROM gone g), -1);

WITH added AS (INSERT INTO rollup_credits SELECT * FROM rollup_credits_of(guids) RETURNING *)
SELECT rollup_add_credits(ARRAY(SELECT ROW(a.*)::rollup_credits FROM added a), 1);
$fn$;

CREATE FUNCTION rollup_fold_sessions(me xid8) RETURNS void
LANGUAGE sql AS $fn$
INSERT INTO rollup_sessions_daily AS r
       (day, site, channel, utm_source, utm_campaign, is_bot, status, sessions, pageviews, events, bounces)
SELECT day, site, channel, utm_source, utm_campaign, is_bot, status,
       sum(sign), sum(sign * pageviews), sum(sign * events), coalesce(sum(sign) FILTER (WHERE bounce), 0)
FROM rollup_pending_sessions WHERE txid = me
GROUP BY 1, 2, 3, 4, 5, 6, 7
HAVING sum(sign) <> 0 OR sum(sign * pageviews) <> 0 OR sum(sign * events) <> 0
    OR coalesce(sum(sign) FILTER (WHERE bounce), 0) <> 0
ON CONFLICT (day, site, channel, utm_source, utm_campaign, is_bot, status) DO UPDATE
SET sessions = r.sessions + excluded.sessions, pageviews = r.pageviews + excluded.pageviews,
    events = r.events + excluded.events, bounces = r.bounces + excluded.bounces;

INSERT INTO rollup_landing_daily AS r (day, site, is_bot, landing_path, sessions, bounces)
SELECT day, site, is_bot, landing_path, sum(sign), coalesce(sum(sign) FILTER (WHERE bounce), 0)
FROM rollup_pending_sessions WHERE txid = me
GROUP BY 1, 2, 3, 4
HAVING sum(sign) <> 0 OR coalesce(sum(sign) FILTER (WHERE bounce), 0) <> 0
ON CONFLICT (day, site, is_bot, landing_path) DO UPDATE
SET sessions = r.sessions + excluded.sessions, bounces = r.bounces + excluded.bounces;
$fn$;

-- Device counts of the devices whose non-bot (day, site, channel) set changed. Their state before
-- the transaction is `sessions` now minus the transaction's own signed rows, so nothing per device
-- needs storing.
CREATE FUNCTION rollup_refresh_devices(me xid8, guids uuid[]) RETURNS void
LANGUAGE sql SET enable_seqscan = off AS $fn$
WITH chg AS (
    SELECT guid, day, site, channel, sum(sign)::bigint AS d
    FROM rollup_pending_sessions WHERE txid = me AND NOT is_bot
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
$fn$;

CREATE FUNCTION rollup_lock() RETURNS void
LANGUAGE sql AS $fn$
SELECT pg_advisory_xact_lock(hashtextextended('touchstream.rollups.' || current_schema(), 0))
$fn$;

CREATE FUNCTION rollup_fold() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    me xid8 := NEW.txid;
    touched uuid[];
BEGIN
    PERFORM rollup_lock();
    PERFORM rollup_fold_conversions(me);
    -- A device's credits move when one of its touches appears, goes, or changes what attribution
    -- reads of it (start, order, channel, utm): then its signed rows do not cancel out.
    touched := ARRAY(
        SELECT guid FROM rollup_pending_sessions WHERE txid = me
        GROUP BY guid, session_id, started_at, session_index, channel, utm_source, utm_medium, utm_campaign
        HAVING sum(sign) <> 0
        UNION SELECT guid FROM rollup_pending_conversions WHERE txid = me);
    IF cardinality(touched) > 0 THEN
        PERFORM rollup_refresh_credits(touched);
    END IF;
    PERFORM rollup_fold_sessions(me);
    -- Devices whose non-bot (day, site, channel) set changed.
    touched := ARRAY(SELECT DISTINCT guid FROM (
        SELECT guid FROM rollup_pending_sessions WHERE txid = me AND NOT is_bot
        GROUP BY guid, day, site, channel HAVING sum(sign) <> 0) changed);
    IF cardinality(touched) > 0 THEN
        PERFORM rollup_refresh_devices(me, touched);
    END IF;
    DELETE FROM rollup_pending_sessions WHERE txid = me;
    DELETE FROM rollup_pending_conversions WHERE txid = me;
    DELETE FROM rollup_pending_folds WHERE txid = me;
    RETURN NULL;
END
$fn$;

CREATE CONSTRAINT TRIGGER rollup_fold AFTER INSERT ON rollup_pending_folds
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rollup_fold();

-- --- the triggers that record changes -----------------------------------------------------------------

CREATE FUNCTION rollup_mark() RETURNS void
LANGUAGE sql AS $fn$
INSERT INTO rollup_pending_folds DEFAULT VALUES ON CONFLICT (txid) DO NOTHING
$fn$;

-- One signed pending row per session version: +1 for a row as it is now, -1 for a row as it was.
-- An UPDATE queues both (no join of the two transition tables: they have no statistics, and a
-- nested loop over a 5,000-row batch took seconds); the fold keeps only what does not cancel out.
CREATE FUNCTION rollup_session_rows(rows_ sessions[], sign integer) RETURNS void
LANGUAGE sql AS $fn$
INSERT INTO rollup_pending_sessions (sign, guid, session_id, started_at, session_index, day, site, channel, utm_source,
                                     utm_medium, utm_campaign, is_bot, status, landing_path, pageviews, events, bounce)
SELECT sign, s.guid, s.session_id, s.started_at, s.session_index, (s.started_at AT TIME ZONE 'UTC')::date, s.site,
       s.channel, s.utm_source, s.utm_medium, s.utm_campaign, s.is_bot, s.status, s.landing_path, s.pageviews,
       s.events, s.is_bounce
FROM unnest(rows_) s
$fn$;

CREATE FUNCTION rollup_sessions_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    old_ sessions[] := '{}';
    new_ sessions[] := '{}';
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        EXECUTE 'SELECT coalesce(array_agg(ROW(o.*)::sessions), ''{}'') FROM old_rows o' INTO old_;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE 'SELECT coalesce(array_agg(ROW(n.*)::sessions), ''{}'') FROM new_rows n' INTO new_;
    END IF;
    IF cardinality(old_) + cardinality(new_) > 0 THEN
        PERFORM rollup_session_rows(old_, -1);
        PERFORM rollup_session_rows(new_, 1);
        PERFORM rollup_mark();
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER rollup_sessions_inserted AFTER INSERT ON sessions
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_sessions_changed();
CREATE TRIGGER rollup_sessions_updated AFTER UPDATE ON sessions
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_sessions_changed();
CREATE TRIGGER rollup_sessions_deleted AFTER DELETE ON sessions
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_sessions_changed();

-- Events: only conversions matter. New rows count when their name is a conversion; old rows when
-- they are in rollup_conversions. The fold re-reads each key from `events`.
CREATE FUNCTION rollup_events_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    n integer := 0;
    more integer;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE 'INSERT INTO rollup_pending_conversions (converted_at, conversion_hit_id, guid)
                 SELECT r.occurred_at, r.hit_id, r.guid FROM new_rows r JOIN conversion_events c ON c.name = r.name';
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        EXECUTE 'INSERT INTO rollup_pending_conversions (converted_at, conversion_hit_id, guid)
                 SELECT r.occurred_at, r.hit_id, r.guid FROM old_rows r
                 JOIN rollup_conversions c ON c.converted_at = r.occurred_at AND c.conversion_hit_id = r.hit_id';
        GET DIAGNOSTICS more = ROW_COUNT;
        n := n + more;
    END IF;
    IF n > 0 THEN
        PERFORM rollup_mark();
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER rollup_events_inserted AFTER INSERT ON events
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_events_changed();
CREATE TRIGGER rollup_events_updated AFTER UPDATE ON events
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_events_changed();
CREATE TRIGGER rollup_events_deleted AFTER DELETE ON events
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_events_changed();

-- A name added to or removed from conversion_events: every event of that name is re-read.
CREATE FUNCTION rollup_conversion_names_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    n integer;
BEGIN
    EXECUTE format(
        'INSERT INTO rollup_pending_conversions (converted_at, conversion_hit_id, guid)
         SELECT e.occurred_at, e.hit_id, e.guid FROM events e WHERE e.name IN (%s)',
        CASE TG_OP WHEN 'INSERT' THEN 'SELECT name FROM new_rows'
                   WHEN 'DELETE' THEN 'SELECT name FROM old_rows'
                   ELSE 'SELECT name FROM new_rows UNION SELECT name FROM old_rows' END);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM rollup_mark();
    END IF;
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

-- Dropping day partitions of `events` fires no trigger: the wrapper takes those days' conversions
-- out of the rollups too (a conversion's rollup day is the UTC day of its partition).
ALTER FUNCTION drop_day_partitions_before(text, date) RENAME TO drop_day_partitions_before_0001;
REVOKE ALL ON FUNCTION drop_day_partitions_before_0001(text, date) FROM PUBLIC, {{writer_role}};

CREATE FUNCTION drop_day_partitions_before(parent text, cutoff date) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    dropped text[];
BEGIN
    dropped := drop_day_partitions_before_0001(parent, cutoff);
    IF parent = 'events' AND cardinality(dropped) > 0 THEN
        PERFORM rollup_lock();
        DELETE FROM rollup_credits WHERE converted_at < cutoff::timestamp AT TIME ZONE 'UTC';
        DELETE FROM rollup_attribution_daily WHERE day < cutoff;
        DELETE FROM rollup_conversions WHERE converted_at < cutoff::timestamp AT TIME ZONE 'UTC';
        DELETE FROM rollup_conversions_daily WHERE day < cutoff;
    END IF;
    RETURN dropped;
END
$fn$;
REVOKE ALL ON FUNCTION drop_day_partitions_before(text, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drop_day_partitions_before(text, date) TO {{writer_role}};

-- Every rollup recomputed from the tables (first run, or after a TRUNCATE). Owner only.
CREATE FUNCTION rollup_rebuild() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    lookback smallint;
    day_ date;
BEGIN
    PERFORM rollup_lock();
    TRUNCATE rollup_sessions_daily, rollup_landing_daily, rollup_devices_daily, rollup_device_reach,
             rollup_conversions, rollup_conversions_daily, rollup_credits, rollup_attribution_daily;
    INSERT INTO rollup_conversions (conversion_hit_id, converted_at, guid, conversion_name, module, site, session_id)
    SELECT conversion_hit_id, converted_at, guid, conversion_name, module, site, conversion_session_id FROM conversions;
    INSERT INTO rollup_conversions_daily (day, site, conversion_name, module, conversions)
    SELECT (converted_at AT TIME ZONE 'UTC')::date, site, conversion_name, module, count(*)
    FROM rollup_conversions GROUP BY 1, 2, 3, 4;
    INSERT INTO rollup_credits SELECT * FROM rollup_credits_of(ARRAY(SELECT DISTINCT guid FROM rollup_conversions));
    -- a day at a time, so no array holds every credit row
    FOR lookback, day_ IN SELECT DISTINCT lookback_days, (converted_at AT TIME ZONE 'UTC')::date FROM rollup_credits LOOP
        PERFORM rollup_add_credits(ARRAY(
            SELECT c FROM rollup_credits c WHERE c.lookback_days = lookback
               AND c.converted_at >= day_::timestamp AT TIME ZONE 'UTC'
               AND c.converted_at < (day_ + 1)::timestamp AT TIME ZONE 'UTC'), 1);
    END LOOP;
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
END
$fn$;
REVOKE ALL ON FUNCTION rollup_rebuild() FROM PUBLIC;

SELECT rollup_rebuild();

-- --- who may read ----------------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION rollup_fold(), rollup_sessions_changed(), rollup_events_changed(), rollup_conversion_names_changed(), rollup_credits_of(uuid[]),
                       rollup_add_credits(rollup_credits[], integer), rollup_fold_conversions(xid8),
                       rollup_refresh_credits(uuid[]), rollup_fold_sessions(xid8), rollup_refresh_devices(xid8, uuid[]),
                       rollup_lock(), rollup_mark(), rollup_session_rows(sessions[], integer) FROM PUBLIC;
GRANT SELECT ON rollup_lookbacks, rollup_sessions_daily, rollup_landing_daily, rollup_devices_daily,
                rollup_device_reach, rollup_conversions, rollup_conversions_daily, rollup_credits,
                rollup_attribution_daily
   TO {{analyst_role}};
