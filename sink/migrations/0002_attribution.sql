-- 0002: conversions and multi-touch attribution (SPEC section 5).
--
-- A conversion is an event whose name is listed in conversion_events. Its touches are the
-- sessions of the same device (guid) that started at or before the conversion, within a
-- 90-day lookback, ordered by started_at (then session_index, session_id). Every model gives
-- each touch a credit; the credits of one conversion sum to 1 under every model.

CREATE TABLE conversion_events (
    name         text PRIMARY KEY,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

INSERT INTO conversion_events (name, description) VALUES
    ('lead', 'a lead: contact form sent, chat started with contact details, call requested'),
    ('appointment', 'an appointment or tour was booked')
ON CONFLICT (name) DO NOTHING;

CREATE VIEW conversions AS
SELECT e.hit_id       AS conversion_hit_id,
       e.name         AS conversion_name,
       e.module,
       e.guid,
       e.session_id   AS conversion_session_id,
       e.site,
       e.occurred_at  AS converted_at,
       e.properties
FROM events e
JOIN conversion_events c ON c.name = e.name;

-- One row per (conversion, touch), with what the models need.
CREATE VIEW attribution_touches AS
WITH touches AS (
    SELECT c.conversion_hit_id,
           c.conversion_name,
           c.module,
           c.guid,
           c.converted_at,
           s.session_id,
           s.session_index,
           s.started_at AS touch_started_at,
           s.channel,
           s.utm_source,
           s.utm_medium,
           s.utm_campaign,
           row_number() OVER (PARTITION BY c.conversion_hit_id, c.converted_at
                              ORDER BY s.started_at, s.session_index, s.session_id) AS touch_index,
           count(*) OVER (PARTITION BY c.conversion_hit_id, c.converted_at) AS touch_count,
           -- time decay: the weight halves for every 7 days between the touch and the conversion
           power(2.0::double precision,
                 -extract(epoch FROM (c.converted_at - s.started_at))::double precision / 604800.0) AS decay_weight
    FROM conversions c
    JOIN sessions s
      ON s.guid = c.guid
     AND s.started_at <= c.converted_at
     AND s.started_at >= c.converted_at - interval '90 days'
)
SELECT t.*,
       coalesce(max(t.touch_index) FILTER (WHERE t.channel IS DISTINCT FROM 'Direct') OVER w,
                t.touch_count) AS last_non_direct_index,
       sum(t.decay_weight) OVER w AS decay_total
FROM touches t
WINDOW w AS (PARTITION BY t.conversion_hit_id, t.converted_at);

-- Every touch of every conversion under every model, with its credit (0 where it gets none).
CREATE VIEW attribution_credits AS
SELECT t.conversion_hit_id,
       t.conversion_name,
       t.module,
       t.guid,
       t.converted_at,
       m.model,
       t.session_id,
       t.touch_index,
       t.touch_count,
       t.touch_started_at,
       t.channel,
       t.utm_source,
       t.utm_medium,
       t.utm_campaign,
       m.credit
FROM attribution_touches t
CROSS JOIN LATERAL (VALUES
    ('first_touch',     CASE WHEN t.touch_index = 1 THEN 1.0 ELSE 0.0 END::double precision),
    ('last_touch',      CASE WHEN t.touch_index = t.touch_count THEN 1.0 ELSE 0.0 END::double precision),
    -- the last touch whose channel is not Direct; the last touch when every touch is Direct
    ('last_non_direct', CASE WHEN t.touch_index = t.last_non_direct_index THEN 1.0 ELSE 0.0 END::double precision),
    ('linear',          1.0::double precision / t.touch_count),
    -- 40/20/40: first and last 40 % each, the middle touches share 20 %; 1 touch: 1; 2 touches: 0.5 each
    ('position_based',  CASE WHEN t.touch_count = 1 THEN 1.0
                             WHEN t.touch_count = 2 THEN 0.5
                             WHEN t.touch_index IN (1, t.touch_count) THEN 0.4
                             ELSE 0.2 / (t.touch_count - 2) END::double precision),
    ('time_decay',      t.decay_weight / t.decay_total)
) AS m(model, credit);

-- Credit grouped for reports. `dimension` says which grouping a row belongs to:
--   channel          model, conversion_name, channel
--   utm              model, conversion_name, utm_source, utm_campaign
--   module           model, conversion_name, module
--   module_channel   model, conversion_name, module, channel
-- `conversions` is the attributed (fractional) number of conversions; `touched_conversions`
-- the number of conversions in which the group has any credit.
CREATE VIEW attribution_report AS
SELECT model,
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
       sum(credit) AS conversions,
       count(DISTINCT conversion_hit_id) FILTER (WHERE credit > 0) AS touched_conversions
FROM attribution_credits
GROUP BY GROUPING SETS (
    (model, conversion_name, channel),
    (model, conversion_name, utm_source, utm_campaign),
    (model, conversion_name, module),
    (model, conversion_name, module, channel)
);
