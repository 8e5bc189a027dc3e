-- 0012: credit per person in the rollups (issue 18), so the dashboard's `by=person` reads sums as
-- `by=device` does instead of the attribution_person_* views (seconds at 90 days).
--
-- A conversion's person credit depends on its person's every device: their sessions (touches),
-- and which devices the person holds. So the unit recomputed is a converting device's
-- conversions, whole, like 0005's rollup_refresh_credits, and a drain recomputes every device of
-- every person it touches:
--
--   * a device whose touches or conversions changed (0005's drain finds them): every device of its
--     person now;
--   * a change of person_devices (person_link() merging persons at a login or a storage clear,
--     person_rebuild() after `forget`, identity retention): person_link() (wrapped below) queues
--     the person ids a merge leaves, a trigger the ids and devices of deleted rows (a
--     device that leaves every person is its own owner again), into rollup_pending_persons; the
--     drain takes every device those ids hold now.
--
-- Deleting by the converting device (not by person) removes the rows a conversion had under the
-- person it belonged to before a merge. Everything else that changes credit reaches the drain as
-- before: retractions and merges of sessions (0004's deletes and moves), late hits, conversions
-- and conversion rules (keys queued, their devices touched), retention (the same), the lookback
-- (rollup_rebuild(), extended below). A person of many devices costs a drain that touches it every
-- device's conversions: the price of exact sums.
--
-- The person rollups hold every lookback of rollup_lookbacks, like the device ones.

CREATE TABLE rollup_pending_persons (person_id text, guid uuid);

-- One row per (lookback, conversion, touch), the touches from every device of the conversion's
-- person: rollup_credits' columns (`guid`: the device that converted; its key and index by guid),
-- then `person` (person_devices.person_id, or the device's guid when no person holds it) and
-- `touch_guid`, the device of the touch.
CREATE TABLE rollup_person_credits (LIKE rollup_credits INCLUDING ALL);
ALTER TABLE rollup_person_credits ADD COLUMN person text NOT NULL, ADD COLUMN touch_guid uuid NOT NULL;

-- The device rollups' shapes, summed from rollup_person_credits.
CREATE TABLE rollup_person_attribution_daily (LIKE rollup_attribution_daily INCLUDING ALL);
CREATE TABLE rollup_person_value_daily (LIKE rollup_value_daily INCLUDING ALL);

-- --- queueing: person_devices changed -------------------------------------------------------------

-- Merges: person_link() (0009's, renamed) wrapped. A merge only unites persons: every device whose
-- person it rewrote ends in the person of one of the edges' ends, so the ends' person ids after the
-- call are queued, once per call and only when it changed a row. (Statement triggers on INSERT and
-- UPDATE cost each edge two transition tables: +40 us per new edge on the sink's write path in
-- bench/identity_bench.py, against one query per call here.)
ALTER FUNCTION person_link(uuid[], text[], uuid[]) RENAME TO person_link_0009;
REVOKE ALL ON FUNCTION person_link_0009(uuid[], text[], uuid[]) FROM PUBLIC, {{writer_role}};

CREATE FUNCTION person_link(guids uuid[], user_ids text[], other_guids uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $fn$
DECLARE
    changed integer := person_link_0009(guids, user_ids, other_guids);
BEGIN
    IF changed > 0 THEN
        INSERT INTO rollup_pending_persons (person_id)
        SELECT DISTINCT pd.person_id FROM person_devices pd
        WHERE pd.guid = ANY(coalesce(guids, '{}') || array_remove(coalesce(other_guids, '{}'), NULL));
    END IF;
    RETURN changed;
END
$fn$;

-- Deletions (`forget`'s person_rebuild, identity retention's person_relink: they delete a person's
-- rows, then relink what remains through person_link above): the person ids and the devices, which
-- are their own owners again if no edge puts them back.
CREATE FUNCTION rollup_persons_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    INSERT INTO rollup_pending_persons (person_id, guid) SELECT person_id, guid FROM old_rows;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER rollup_persons_deleted AFTER DELETE ON person_devices
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_persons_deleted();

-- --- computing credits per person -------------------------------------------------------------------

-- attribution_owner_touches/_credits (0010) with attributed_by = 'person', for the conversions of
-- the devices `guids` and every lookback: the view's expressions and window orders, so each credit
-- is the very double the view gives (tests compare them touch by touch).
CREATE FUNCTION rollup_person_credits_of(guids uuid[]) RETURNS SETOF rollup_person_credits
LANGUAGE sql STABLE SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $fn$
WITH owned AS (
    SELECT coalesce(p.person_id, c.guid::text) AS person, coalesce(d.guid, c.guid) AS touch_guid, c.*
    FROM (SELECT DISTINCT g FROM unnest(guids) g) x(guid)
    JOIN rollup_conversions c ON c.guid = x.guid
    LEFT JOIN person_devices p ON p.guid = c.guid
    LEFT JOIN person_devices d ON d.person_id = p.person_id
), touches AS (
    SELECT l.days AS lookback_days, o.person, o.conversion_hit_id, o.converted_at, o.guid, o.conversion_name,
           o.module, o.site, o.value, o.currency,
           s.session_id, s.guid AS touch_guid, s.started_at AS touch_started_at, s.channel, s.utm_source,
           s.utm_medium, s.utm_campaign,
           row_number() OVER (PARTITION BY l.days, o.conversion_hit_id, o.converted_at
                              ORDER BY s.started_at, s.session_index, s.session_id) AS touch_index,
           count(*) OVER (PARTITION BY l.days, o.conversion_hit_id, o.converted_at) AS touch_count,
           power(2.0::double precision,
                 -extract(epoch FROM (o.converted_at - s.started_at))::double precision / 604800.0) AS decay_weight
    FROM owned o
    CROSS JOIN rollup_lookbacks l
    JOIN sessions s
      ON s.guid = o.touch_guid
     AND s.started_at <= o.converted_at
     AND s.started_at >= o.converted_at - make_interval(days => l.days)
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
       attribution_credit('first_touch', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       attribution_credit('last_touch', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       attribution_credit('last_non_direct', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       attribution_credit('linear', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       attribution_credit('position_based', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       attribution_credit('time_decay', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       value, currency, person, touch_guid
FROM windowed
$fn$;

-- --- summing signed credit rows (device or person) into their daily rollups ------------------------------

-- `work`: a temp table of signed credit rows; `daily`/`value_daily`: the rollups it is summed into.
-- One definition for both kinds (0010's rollup_add_credits() now calls it for the devices).
CREATE FUNCTION rollup_sum_credits(work text, daily text, value_daily text) RETURNS void
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp AS $fn$
DECLARE
    groups constant text := 'day, lookback_days, site, conversion_name, module, channel, utm_source, utm_campaign';
    sums constant text := 'first_touch = d.first_touch + excluded.first_touch, '
        'last_touch = d.last_touch + excluded.last_touch, '
        'last_non_direct = d.last_non_direct + excluded.last_non_direct, linear = d.linear + excluded.linear, '
        'position_based = d.position_based + excluded.position_based, time_decay = d.time_decay + excluded.time_decay';
    models constant text[] := ARRAY['first_touch', 'last_touch', 'last_non_direct', 'linear', 'position_based',
                                    'time_decay'];
    keys constant text := '(r.converted_at AT TIME ZONE ''UTC'')::date, r.lookback_days, r.site, r.conversion_name, '
        'r.module, r.channel, r.utm_source, r.utm_campaign';
BEGIN
    EXECUTE format(
        'INSERT INTO %I AS d (%s, %s) SELECT %s, %s FROM pg_temp.%I r GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 '
        'ON CONFLICT (%s) DO UPDATE SET %s',
        daily, groups, array_to_string(models, ', '), keys,
        (SELECT string_agg(format('sum(r.sign * r.%I::numeric)', m), ', ') FROM unnest(models) m),
        work, groups, sums);
    -- (credit::numeric * value: the very product the views give, so the sums are equal)
    EXECUTE format(
        'INSERT INTO %I AS d (%s, currency, %s) SELECT %s, r.currency, %s FROM pg_temp.%I r '
        'WHERE r.currency IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ON CONFLICT (%s, currency) DO UPDATE SET %s',
        value_daily, groups, array_to_string(models, ', '), keys,
        (SELECT string_agg(format('sum(r.sign * (r.%I::numeric * r.value))', m), ', ') FROM unnest(models) m),
        work, groups, sums);
    EXECUTE format('TRUNCATE pg_temp.%I', work);
END
$fn$;

CREATE OR REPLACE FUNCTION rollup_add_credits() RETURNS void
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    PERFORM rollup_sum_credits('rollup_work_credits', 'rollup_attribution_daily', 'rollup_value_daily');
END
$fn$;

-- Person credits of the conversions of the devices `guids`: recomputed whole, the difference carried
-- to the daily rollups.
CREATE FUNCTION rollup_refresh_person_credits(guids uuid[]) RETURNS void
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $fn$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS rollup_work_person_credits (sign integer NOT NULL, LIKE rollup_person_credits)
        ON COMMIT DROP;
    WITH gone AS (DELETE FROM rollup_person_credits WHERE guid IN (SELECT unnest(guids)) RETURNING *)
    INSERT INTO pg_temp.rollup_work_person_credits SELECT -1, g.* FROM gone g;
    WITH added AS (INSERT INTO rollup_person_credits SELECT * FROM rollup_person_credits_of(guids) RETURNING *)
    INSERT INTO pg_temp.rollup_work_person_credits SELECT 1, a.* FROM added a;
    PERFORM rollup_sum_credits('rollup_work_person_credits', 'rollup_person_attribution_daily',
                               'rollup_person_value_daily');
END
$fn$;

-- --- the drain: 0010's, then the persons it touched ----------------------------------------------------

ALTER FUNCTION rollup_drain(integer) RENAME TO rollup_drain_0010;
REVOKE ALL ON FUNCTION rollup_drain_0010(integer) FROM PUBLIC, {{writer_role}};

-- In the same REPEATABLE READ transaction as the device step (its work tables are still there):
-- the devices whose credits it recomputed, the person ids and devices queued by person_link() and
-- person_devices' trigger (all of them at every step: merges are few), and every device their
-- persons hold now.
CREATE FUNCTION rollup_drain(batch integer, OUT drained_devices integer, OUT changed_sessions integer,
                             OUT drained_conversions integer, OUT complete boolean, OUT fresh_as_of timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp SET jit = off AS $fn$
DECLARE
    touched uuid[];
BEGIN
    SELECT * INTO drained_devices, changed_sessions, drained_conversions, complete, fresh_as_of
    FROM rollup_drain_0010(batch);
    CREATE TEMP TABLE rollup_work_persons (person_id text, guid uuid) ON COMMIT DROP;
    WITH taken AS (DELETE FROM rollup_pending_persons RETURNING person_id, guid)
    INSERT INTO pg_temp.rollup_work_persons SELECT DISTINCT person_id, guid FROM taken;
    -- (0005's drain: the devices whose touches or conversions changed)
    INSERT INTO pg_temp.rollup_work_persons (guid)
    SELECT guid FROM pg_temp.rollup_work_sessions
    GROUP BY guid, session_id, started_at, session_index, channel, utm_source, utm_medium, utm_campaign
    HAVING sum(sign) <> 0
    UNION SELECT guid FROM pg_temp.rollup_work_conversions;
    touched := ARRAY(
        SELECT w.guid FROM pg_temp.rollup_work_persons w WHERE w.guid IS NOT NULL
        UNION
        SELECT d.guid FROM person_devices d
        WHERE d.person_id IN (SELECT w.person_id FROM pg_temp.rollup_work_persons w
                              UNION
                              SELECT p.person_id FROM pg_temp.rollup_work_persons w
                              JOIN person_devices p ON p.guid = w.guid));
    IF cardinality(touched) > 0 THEN
        PERFORM rollup_refresh_person_credits(touched);
    END IF;
END
$fn$;

-- --- rebuild: 0010's, then the persons ---------------------------------------------------------------------

ALTER FUNCTION rollup_rebuild() RENAME TO rollup_rebuild_0010;
REVOKE ALL ON FUNCTION rollup_rebuild_0010() FROM PUBLIC;

-- person_devices is locked after 0010's tables (the sink's writer merges persons last in its
-- transaction, so this order cannot deadlock with it) and held until the rebuild commits.
CREATE FUNCTION rollup_rebuild() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp SET jit = off AS $fn$
BEGIN
    PERFORM rollup_rebuild_0010();
    LOCK TABLE person_devices IN SHARE MODE;
    DELETE FROM rollup_pending_persons;
    TRUNCATE rollup_person_credits, rollup_person_attribution_daily, rollup_person_value_daily;
    PERFORM rollup_refresh_person_credits(ARRAY(SELECT DISTINCT guid FROM rollup_conversions));
END
$fn$;
REVOKE ALL ON FUNCTION rollup_rebuild() FROM PUBLIC;

SELECT rollup_rebuild();

-- --- who may do what -----------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION rollup_persons_deleted(), rollup_person_credits_of(uuid[]), rollup_sum_credits(text, text, text),
                       rollup_refresh_person_credits(uuid[]), rollup_drain(integer), person_link(uuid[], text[], uuid[])
   FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rollup_drain(integer), person_link(uuid[], text[], uuid[]) TO {{writer_role}};
GRANT SELECT ON rollup_person_credits, rollup_person_attribution_daily, rollup_person_value_daily
   TO {{analyst_role}};
