-- 0010: attribution that operators configure (issue 18): the lookback, conversion value, conversions
-- defined by URL pattern, and credit per person beside credit per device (SPEC section 5).
--
--   attribution_settings  one row: the lookback of the views (initial value: the migration's setting
--                         TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS; then `touchstream attribution set`).
--                         Changing it keeps the rollups equal to the views: its trigger puts the new
--                         lookback into rollup_lookbacks and, when that set changed, runs
--                         rollup_rebuild() in the same transaction (seconds to minutes on a large
--                         database; it holds off the sink's writes while it reads).
--   events.value/currency a conversion's value (numeric, as the hit sent it) and ISO 4217 currency.
--                         Attributed value is credit x value, reported per currency, never summed
--                         across currencies.
--   conversion_rules      (name, url_pattern): a pageview whose URL matches `url_pattern` (SQL LIKE,
--                         case-sensitive) is a conversion `name`, with the rule's optional value.
--                         LIKE rather than a regular expression: `%` and `_` say what a thank-you
--                         page needs, a pattern cannot take exponential time on a hostile URL, and
--                         the sink, the views and the rollups all ask PostgreSQL the same LIKE, so
--                         they cannot disagree. A pageview matching several rules converts once, under
--                         the first rule by (name, url_pattern).
--   attribution_owner_*   the models, written once over an "owner": the device (guid) or the person
--                         (person_devices.person_id; a guid not in it is its own person). A person's
--                         touches from all its devices earn credit for its conversions. The device
--                         views (attribution_touches, attribution_credits, attribution_report) and the
--                         person views (attribution_person_*) are filters of them.
--   attribution_credit()  the six models' formulas, the one definition the views and the rollups use.
--
-- Rollups: rollup_conversions and rollup_credits carry the value and currency, rollup_value_daily sums
-- attributed value per currency; URL conversions are queued by the sink's writer (new pageviews), by
-- triggers (pageviews moved or deleted, rules changed) and by retention, like events. Per-person
-- credit has no rollup: identity changes (a login joining two devices) would have to re-queue every
-- device of the person, so the dashboard reads the person views directly.

-- --- the lookback -------------------------------------------------------------------------------------

CREATE TABLE attribution_settings (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    lookback_days  smallint NOT NULL CHECK (lookback_days BETWEEN 1 AND 365),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO attribution_settings (lookback_days) VALUES ({{attribution_lookback_days}});

-- The lookbacks the dashboard offers (7, 30, 90: `offered`) and the configured one.
ALTER TABLE rollup_lookbacks ADD COLUMN offered boolean NOT NULL DEFAULT true;

-- --- conversion value -----------------------------------------------------------------------------------

ALTER TABLE events ADD COLUMN value numeric, ADD COLUMN currency text;

-- --- conversions by URL pattern ---------------------------------------------------------------------------

CREATE TABLE conversion_rules (
    name         text NOT NULL CHECK (name <> ''),
    -- (LIKE refuses a pattern ending in a lone escape `\` at query time: refused here instead, so no
    -- pattern can break the views or the sink's queueing)
    url_pattern  text NOT NULL CHECK (url_pattern <> '' AND ('' LIKE url_pattern) IS NOT NULL),
    value        numeric,
    currency     text CHECK (currency ~ '^[A-Z]{3}$'),
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, url_pattern),
    CHECK ((value IS NULL) = (currency IS NULL))
);

-- The rule a pageview's URL converts under (none, or the first by name and pattern).
CREATE FUNCTION conversion_rule_for(url text) RETURNS TABLE (name text, value numeric, currency text)
LANGUAGE sql STABLE AS $fn$
SELECT r.name, r.value, r.currency FROM {{schema}}.conversion_rules r
WHERE url LIKE r.url_pattern ORDER BY r.name, r.url_pattern LIMIT 1
$fn$;

-- --- the views ------------------------------------------------------------------------------------------

DROP VIEW attribution_report, attribution_credits, attribution_touches;

-- Events whose name is in conversion_events, and pageviews matching a rule. (No rule: the pageview
-- branch is skipped at once, so the view costs what 0002's did.)
CREATE OR REPLACE VIEW conversions AS
SELECT e.hit_id       AS conversion_hit_id,
       e.name         AS conversion_name,
       e.module,
       e.guid,
       e.session_id   AS conversion_session_id,
       e.site,
       e.occurred_at  AS converted_at,
       e.properties,
       e.value,
       e.currency,
       'event'::text  AS defined_by
FROM events e
JOIN conversion_events c ON c.name = e.name
UNION ALL
SELECT p.hit_id, r.name, NULL::text, p.guid, p.session_id, p.site, p.occurred_at, '{}'::jsonb, r.value, r.currency,
       'url'::text
FROM pageviews p
CROSS JOIN LATERAL conversion_rule_for(p.url) r
WHERE EXISTS (SELECT 1 FROM conversion_rules);

-- The six models for one touch: its position, the conversion's touch count, the last non-Direct
-- touch's position, and the time-decay weights (0002's expressions, unchanged).
CREATE FUNCTION attribution_credit(model text, touch_index bigint, touch_count bigint, last_non_direct_index bigint,
                                   decay_weight double precision, decay_total double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
SELECT CASE model
    WHEN 'first_touch' THEN CASE WHEN touch_index = 1 THEN 1.0 ELSE 0.0 END::double precision
    WHEN 'last_touch' THEN CASE WHEN touch_index = touch_count THEN 1.0 ELSE 0.0 END::double precision
    -- the last touch whose channel is not Direct; the last touch when every touch is Direct
    WHEN 'last_non_direct' THEN CASE WHEN touch_index = last_non_direct_index THEN 1.0 ELSE 0.0 END::double precision
    WHEN 'linear' THEN 1.0::double precision / touch_count
    -- 40/20/40: first and last 40 % each, the middle touches share 20 %; 1 touch: 1; 2 touches: 0.5 each
    WHEN 'position_based' THEN CASE WHEN touch_count = 1 THEN 1.0
                                    WHEN touch_count = 2 THEN 0.5
                                    WHEN touch_index IN (1, touch_count) THEN 0.4
                                    ELSE 0.2 / (touch_count - 2) END::double precision
    -- time decay: the weight halves for every 7 days between the touch and the conversion
    WHEN 'time_decay' THEN decay_weight / decay_total
END
$fn$;

-- One row per (owner kind, conversion, touch). attributed_by 'device': the conversion's own device;
-- 'person': every device of its person. Touches: sessions of those devices that started at or before
-- the conversion within the configured lookback, ordered by start (then session_index, session_id).
CREATE VIEW attribution_owner_touches AS
WITH owned AS (
    SELECT 'device'::text AS attributed_by, c.guid::text AS owner, c.guid AS touch_guid, c.*
    FROM conversions c
    UNION ALL
    SELECT 'person', coalesce(p.person_id, c.guid::text), coalesce(d.guid, c.guid), c.*
    FROM conversions c
    LEFT JOIN person_devices p ON p.guid = c.guid
    LEFT JOIN person_devices d ON d.person_id = p.person_id
), touches AS (
    SELECT o.attributed_by, o.owner, o.conversion_hit_id, o.conversion_name, o.module, o.guid, o.site,
           o.converted_at, o.value, o.currency,
           s.guid AS touch_guid,
           s.session_id,
           s.session_index,
           s.started_at AS touch_started_at,
           s.channel,
           s.utm_source,
           s.utm_medium,
           s.utm_campaign,
           row_number() OVER (PARTITION BY o.attributed_by, o.conversion_hit_id, o.converted_at
                              ORDER BY s.started_at, s.session_index, s.session_id) AS touch_index,
           count(*) OVER (PARTITION BY o.attributed_by, o.conversion_hit_id, o.converted_at) AS touch_count,
           power(2.0::double precision,
                 -extract(epoch FROM (o.converted_at - s.started_at))::double precision / 604800.0) AS decay_weight
    FROM owned o
    JOIN sessions s
      ON s.guid = o.touch_guid
     AND s.started_at <= o.converted_at
     AND s.started_at >= o.converted_at - make_interval(days => (SELECT lookback_days FROM attribution_settings))
)
SELECT t.*,
       coalesce(max(t.touch_index) FILTER (WHERE t.channel IS DISTINCT FROM 'Direct') OVER w,
                t.touch_count) AS last_non_direct_index,
       sum(t.decay_weight) OVER w AS decay_total
FROM touches t
WINDOW w AS (PARTITION BY t.attributed_by, t.conversion_hit_id, t.converted_at);

-- Every touch under every model with its credit (0 where it gets none) and its attributed value
-- (credit x the conversion's value, in its currency; NULL for a conversion without value).
CREATE VIEW attribution_owner_credits AS
SELECT t.attributed_by, t.owner, t.conversion_hit_id, t.conversion_name, t.module, t.guid, t.converted_at,
       m.model, t.session_id, t.touch_index, t.touch_count, t.touch_started_at, t.channel, t.utm_source,
       t.utm_medium, t.utm_campaign, m.credit, t.site, t.value, t.currency,
       m.credit::numeric * t.value AS attributed_value, t.touch_guid
FROM attribution_owner_touches t
CROSS JOIN LATERAL (
    SELECT n.model, attribution_credit(n.model, t.touch_index, t.touch_count, t.last_non_direct_index,
                                       t.decay_weight, t.decay_total) AS credit
    FROM unnest(ARRAY['first_touch', 'last_touch', 'last_non_direct', 'linear', 'position_based', 'time_decay'])
         WITH ORDINALITY n(model, ord)
) m;

-- Credit grouped for reports (0002's groupings, per owner kind). `dimension`:
--   channel          model, conversion_name, channel
--   utm              model, conversion_name, utm_source, utm_campaign
--   module           model, conversion_name, module
--   module_channel   model, conversion_name, module, channel
-- `conversions` is the attributed (fractional) number of conversions; `touched_conversions` the
-- number in which the group has any credit; `currency` and `value`: attributed value, one row per
-- currency (NULL currency: the conversions without value, value NULL).
CREATE VIEW attribution_owner_report AS
SELECT attributed_by,
       model,
       conversion_name,
       CASE
           WHEN GROUPING(module) = 0 AND GROUPING(channel) = 0 THEN 'module_channel'
           WHEN GROUPING(channel) = 0 THEN 'channel'
           WHEN GROUPING(module) = 0 THEN 'module'
           ELSE 'utm'
       END AS dimension,
       channel,
       utm_source,
       utm_campaign,
       module,
       currency,
       sum(credit) AS conversions,
       count(DISTINCT conversion_hit_id) FILTER (WHERE credit > 0) AS touched_conversions,
       sum(attributed_value) AS value
FROM attribution_owner_credits
GROUP BY GROUPING SETS (
    (attributed_by, model, conversion_name, currency, channel),
    (attributed_by, model, conversion_name, currency, utm_source, utm_campaign),
    (attributed_by, model, conversion_name, currency, module),
    (attributed_by, model, conversion_name, currency, module, channel)
);

-- Per device: 0002's views, same columns first, the new ones after.
CREATE VIEW attribution_touches AS
SELECT conversion_hit_id, conversion_name, module, guid, converted_at, session_id, session_index, touch_started_at,
       channel, utm_source, utm_medium, utm_campaign, touch_index, touch_count, decay_weight, last_non_direct_index,
       decay_total, site, value, currency
FROM attribution_owner_touches WHERE attributed_by = 'device';

CREATE VIEW attribution_credits AS
SELECT conversion_hit_id, conversion_name, module, guid, converted_at, model, session_id, touch_index, touch_count,
       touch_started_at, channel, utm_source, utm_medium, utm_campaign, credit, site, value, currency, attributed_value
FROM attribution_owner_credits WHERE attributed_by = 'device';

-- (0002's report summed every currency's conversions in one row: here a row per currency. Sum
-- `conversions` over currency for the count; never `value`.)
CREATE VIEW attribution_report AS
SELECT model, conversion_name, dimension, channel, utm_source, utm_campaign, module, conversions, touched_conversions,
       currency, value
FROM attribution_owner_report WHERE attributed_by = 'device';

-- Per person: `person` is the person_id (or the guid of a device no person holds); `touch_guid`
-- the device of the touch, `guid` the device that converted.
CREATE VIEW attribution_person_touches AS
SELECT owner AS person, conversion_hit_id, conversion_name, module, guid, converted_at, session_id, session_index,
       touch_started_at, channel, utm_source, utm_medium, utm_campaign, touch_index, touch_count, decay_weight,
       last_non_direct_index, decay_total, site, value, currency, touch_guid
FROM attribution_owner_touches WHERE attributed_by = 'person';

CREATE VIEW attribution_person_credits AS
SELECT owner AS person, conversion_hit_id, conversion_name, module, guid, converted_at, model, session_id, touch_index,
       touch_count, touch_started_at, channel, utm_source, utm_medium, utm_campaign, credit, site, value, currency,
       attributed_value, touch_guid
FROM attribution_owner_credits WHERE attributed_by = 'person';

CREATE VIEW attribution_person_report AS
SELECT model, conversion_name, dimension, channel, utm_source, utm_campaign, module, conversions, touched_conversions,
       currency, value
FROM attribution_owner_report WHERE attributed_by = 'person';

-- --- rollups: value, URL conversions, the configured lookback ------------------------------------------

ALTER TABLE rollup_conversions ADD COLUMN value numeric, ADD COLUMN currency text;
ALTER TABLE rollup_credits ADD COLUMN value numeric, ADD COLUMN currency text;

-- Attributed value per conversion day, grouping and currency (each model's credit x value, summed).
CREATE TABLE rollup_value_daily (
    day              date NOT NULL,
    lookback_days    smallint NOT NULL,
    site             text NOT NULL,
    conversion_name  text NOT NULL,
    module           text,
    channel          text NOT NULL,
    utm_source       text,
    utm_campaign     text,
    currency         text NOT NULL,
    first_touch      numeric NOT NULL,
    last_touch       numeric NOT NULL,
    last_non_direct  numeric NOT NULL,
    linear           numeric NOT NULL,
    position_based   numeric NOT NULL,
    time_decay       numeric NOT NULL,
    UNIQUE NULLS NOT DISTINCT (day, lookback_days, site, conversion_name, module, channel, utm_source, utm_campaign,
                               currency)
);

-- 0005's function with the models from attribution_credit() and the conversion's value.
CREATE OR REPLACE FUNCTION rollup_credits_of(guids uuid[]) RETURNS SETOF rollup_credits
LANGUAGE sql STABLE SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $fn$
WITH touches AS (
    SELECT l.days AS lookback_days, c.conversion_hit_id, c.converted_at, c.guid, c.conversion_name, c.module, c.site,
           c.value, c.currency,
           s.session_id, s.started_at AS touch_started_at, s.channel, s.utm_source, s.utm_medium, s.utm_campaign,
           row_number() OVER (PARTITION BY l.days, c.conversion_hit_id, c.converted_at
                              ORDER BY s.started_at, s.session_index, s.session_id) AS touch_index,
           count(*) OVER (PARTITION BY l.days, c.conversion_hit_id, c.converted_at) AS touch_count,
           power(2.0::double precision,
                 -extract(epoch FROM (c.converted_at - s.started_at))::double precision / 604800.0) AS decay_weight
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
       attribution_credit('first_touch', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       attribution_credit('last_touch', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       attribution_credit('last_non_direct', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       attribution_credit('linear', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       attribution_credit('position_based', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       attribution_credit('time_decay', touch_index, touch_count, last_non_direct_index, decay_weight, decay_total),
       value, currency
FROM windowed
$fn$;

-- 0005's fold, reading a queued key from events (by name) or pageviews (by rule), with the value.
-- Pageviews are read only while a rule exists (a rule removed has no conversions left to add): a
-- drain reading pageviews holds up the creation of their day partitions while it runs, as it does
-- for events.
CREATE OR REPLACE FUNCTION rollup_fold_conversions() RETURNS void
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
        INSERT INTO rollup_conversions (conversion_hit_id, converted_at, guid, conversion_name, module, site, session_id,
                                        value, currency)
        SELECT e.hit_id, e.occurred_at, e.guid, e.name, e.module, e.site, e.session_id, e.value, e.currency
        FROM pg_temp.rollup_work_keys k
        JOIN events e ON e.occurred_at = k.converted_at AND e.hit_id = k.conversion_hit_id
        JOIN conversion_events c ON c.name = e.name
        RETURNING *
    )
    INSERT INTO pg_temp.rollup_work_conversions SELECT 1, a.* FROM added a;
    IF EXISTS (SELECT 1 FROM conversion_rules) THEN
        WITH added AS (
            INSERT INTO rollup_conversions (conversion_hit_id, converted_at, guid, conversion_name, module, site,
                                            session_id, value, currency)
            SELECT p.hit_id, p.occurred_at, p.guid, r.name, NULL, p.site, p.session_id, r.value, r.currency
            FROM pg_temp.rollup_work_keys k
            JOIN pageviews p ON p.occurred_at = k.converted_at AND p.hit_id = k.conversion_hit_id
            CROSS JOIN LATERAL conversion_rule_for(p.url) r
            RETURNING *
        )
        INSERT INTO pg_temp.rollup_work_conversions SELECT 1, a.* FROM added a;
    END IF;

    INSERT INTO rollup_conversions_daily AS d (day, site, conversion_name, module, conversions)
    SELECT (converted_at AT TIME ZONE 'UTC')::date, site, conversion_name, module, sum(sign)
    FROM pg_temp.rollup_work_conversions GROUP BY 1, 2, 3, 4 HAVING sum(sign) <> 0
    ON CONFLICT (day, site, conversion_name, module) DO UPDATE SET conversions = d.conversions + excluded.conversions;
END
$fn$;

-- 0005's credit sums, and the attributed value per currency beside them.
CREATE OR REPLACE FUNCTION rollup_add_credits() RETURNS void
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
    -- (credit::numeric * value: the very product attribution_credits gives, so the sums are equal)
    INSERT INTO rollup_value_daily AS d
           (day, lookback_days, site, conversion_name, module, channel, utm_source, utm_campaign, currency,
            first_touch, last_touch, last_non_direct, linear, position_based, time_decay)
    SELECT (r.converted_at AT TIME ZONE 'UTC')::date, r.lookback_days, r.site, r.conversion_name, r.module, r.channel,
           r.utm_source, r.utm_campaign, r.currency,
           sum(r.sign * (r.first_touch::numeric * r.value)), sum(r.sign * (r.last_touch::numeric * r.value)),
           sum(r.sign * (r.last_non_direct::numeric * r.value)), sum(r.sign * (r.linear::numeric * r.value)),
           sum(r.sign * (r.position_based::numeric * r.value)), sum(r.sign * (r.time_decay::numeric * r.value))
    FROM pg_temp.rollup_work_credits r
    WHERE r.currency IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    ON CONFLICT (day, lookback_days, site, conversion_name, module, channel, utm_source, utm_campaign, currency)
    DO UPDATE
    SET first_touch = d.first_touch + excluded.first_touch,
        last_touch = d.last_touch + excluded.last_touch,
        last_non_direct = d.last_non_direct + excluded.last_non_direct,
        linear = d.linear + excluded.linear,
        position_based = d.position_based + excluded.position_based,
        time_decay = d.time_decay + excluded.time_decay;
    TRUNCATE pg_temp.rollup_work_credits;
END
$fn$;

-- 0005's rebuild, with URL conversions, value, and the tables attribution reads held still.
CREATE OR REPLACE FUNCTION rollup_rebuild() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp SET jit = off AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(rollup_lock_key());
    LOCK TABLE sessions, events, pageviews, conversion_events, conversion_rules IN SHARE MODE;
    PERFORM rollup_work_tables();
    DELETE FROM rollup_pending_devices;
    DELETE FROM rollup_pending_conversions;
    TRUNCATE rollup_sessions_daily, rollup_landing_daily, rollup_devices_daily, rollup_device_reach,
             rollup_conversions, rollup_conversions_daily, rollup_credits, rollup_attribution_daily,
             rollup_value_daily, rollup_session_facts;
    INSERT INTO rollup_session_facts
    SELECT session_id, guid, started_at, session_index, site, channel, utm_source, utm_medium, utm_campaign, is_bot,
           status, landing_path, pageviews, events, is_bounce
    FROM sessions;
    INSERT INTO rollup_conversions (conversion_hit_id, converted_at, guid, conversion_name, module, site, session_id,
                                    value, currency)
    SELECT conversion_hit_id, converted_at, guid, conversion_name, module, site, conversion_session_id, value, currency
    FROM conversions;
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

-- --- what queues URL conversions besides the sink's writer ------------------------------------------------

-- Pageviews moved (a merge) or deleted (`forget`) that match a rule: their keys. No rule, nothing to do
-- (removing a rule queued its conversions already).
CREATE FUNCTION rollup_pageviews_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM conversion_rules) THEN
        RETURN NULL;
    END IF;
    INSERT INTO rollup_pending_conversions (converted_at, conversion_hit_id)
    SELECT r.occurred_at, r.hit_id FROM old_rows r
    WHERE EXISTS (SELECT 1 FROM conversion_rules c WHERE r.url LIKE c.url_pattern);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER rollup_pageviews_updated AFTER UPDATE ON pageviews
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_pageviews_changed();
CREATE TRIGGER rollup_pageviews_deleted AFTER DELETE ON pageviews
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_pageviews_changed();

-- A rule added, changed or removed: every pageview its pattern (old or new) matches is queued. The
-- SHARE lock plays the part it plays for conversion_events in 0005: a pageview written meanwhile is
-- either seen here or sees the new rule when its writer queues it (sink/rollups.py).
CREATE FUNCTION rollup_conversion_rules_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    LOCK TABLE pageviews IN SHARE MODE;
    EXECUTE format(
        'INSERT INTO rollup_pending_conversions (converted_at, conversion_hit_id)
         SELECT p.occurred_at, p.hit_id FROM pageviews p WHERE p.url LIKE ANY (ARRAY(%s))',
        CASE TG_OP WHEN 'INSERT' THEN 'SELECT url_pattern FROM new_rows'
                   WHEN 'DELETE' THEN 'SELECT url_pattern FROM old_rows'
                   ELSE 'SELECT url_pattern FROM new_rows UNION SELECT url_pattern FROM old_rows' END);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER rollup_conversion_rules_inserted AFTER INSERT ON conversion_rules
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_conversion_rules_changed();
CREATE TRIGGER rollup_conversion_rules_updated AFTER UPDATE ON conversion_rules
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_conversion_rules_changed();
CREATE TRIGGER rollup_conversion_rules_deleted AFTER DELETE ON conversion_rules
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_conversion_rules_changed();

-- Retention of pageviews too (0005's wrapper queued only for events): the conversions the rollups hold
-- for the dropped days, which the next drain finds gone.
CREATE OR REPLACE FUNCTION drop_day_partitions_before(parent text, cutoff date) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $fn$
DECLARE
    dropped text[];
BEGIN
    dropped := drop_day_partitions_before_0001(parent, cutoff);
    IF parent IN ('events', 'pageviews') AND cardinality(dropped) > 0 THEN
        INSERT INTO rollup_pending_conversions (converted_at, conversion_hit_id)
        SELECT converted_at, conversion_hit_id FROM rollup_conversions
        WHERE converted_at < cutoff::timestamp AT TIME ZONE 'UTC';
    END IF;
    RETURN dropped;
END
$fn$;

-- --- the lookback changes: rollup_lookbacks follows, the rollups are rebuilt when it moved -----------------

CREATE FUNCTION attribution_settings_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {{schema}}, pg_temp AS $fn$
DECLARE
    changed integer;
    added integer;
BEGIN
    DELETE FROM rollup_lookbacks WHERE NOT offered AND days <> (SELECT lookback_days FROM attribution_settings);
    GET DIAGNOSTICS changed = ROW_COUNT;
    INSERT INTO rollup_lookbacks (days, offered) SELECT lookback_days, false FROM attribution_settings
    ON CONFLICT (days) DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF changed + added > 0 THEN
        PERFORM rollup_rebuild();
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER attribution_settings_changed AFTER UPDATE ON attribution_settings
FOR EACH STATEMENT EXECUTE FUNCTION attribution_settings_changed();

-- The configured lookback among the rollups' from the start, and everything recomputed once with value
-- and URL conversions (both empty before this migration, so the rollups already agree; the rebuild
-- also covers a lookback outside 7/30/90).
INSERT INTO rollup_lookbacks (days, offered) SELECT lookback_days, false FROM attribution_settings
ON CONFLICT (days) DO NOTHING;
SELECT rollup_rebuild();

-- --- who may do what ---------------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION rollup_pageviews_changed(), rollup_conversion_rules_changed(), attribution_settings_changed()
   FROM PUBLIC;
-- The writer reads the rules (to queue the URL conversions among its pageviews).
GRANT SELECT ON conversion_rules, attribution_settings TO {{writer_role}};
GRANT SELECT ON attribution_settings, conversion_rules, conversions, attribution_owner_touches,
                attribution_owner_credits, attribution_owner_report, attribution_touches, attribution_credits,
                attribution_report, attribution_person_touches, attribution_person_credits, attribution_person_report,
                rollup_value_daily
   TO {{analyst_role}};
