-- A synthetic 90-day history for bench/dashboard_bench.py, generated inside PostgreSQL (fast on 2
-- cores) into the sink's own tables; nothing is queued for the rollups of migration 0005 (the bench
-- runs rollup_rebuild() after the last chunk). Deterministic: setseed and md5-derived ids. Placeholders:
-- {first}, {last} (device numbers of this chunk; run once per chunk).
SELECT setseed(0.4242 + {first}::float8 / 1e9);
CREATE TEMP TABLE IF NOT EXISTS bench_sources (k int PRIMARY KEY, channel text, utm_source text, utm_medium text,
    utm_campaign text, referrer_host text, click_id_type text, cum float8);
TRUNCATE bench_sources;
INSERT INTO bench_sources
SELECT k, channel, utm_source, utm_medium, utm_campaign, referrer_host, click_id_type,
       sum(w) OVER (ORDER BY k)::float8 / sum(w) OVER ()  -- float: integer division would give 0 to all but the last
FROM (VALUES
 (1, 'Organic Search', NULL, NULL, NULL, 'www.google.com', NULL, 28), (2, 'Paid Search', 'google', 'cpc', 'spring_lease', 'www.google.com', 'gclid', 12),
 (3, 'Paid Search', 'bing', 'cpc', 'brand', 'www.bing.com', 'msclkid', 3), (4, 'Paid Social', 'facebook', 'paid_social', 'spring_lease', 'm.facebook.com', 'fbclid', 8),
 (5, 'Paid Social', 'instagram', 'paid_social', 'summer_tour', 'l.instagram.com', 'fbclid', 3), (6, 'Email', 'newsletter', 'email', 'may_newsletter', NULL, NULL, 5),
 (7, 'Email', 'newsletter', 'email', 'june_newsletter', NULL, NULL, 3), (8, 'Organic Search', NULL, NULL, NULL, 'www.bing.com', NULL, 5),
 (9, 'Organic Social', NULL, NULL, NULL, 'www.instagram.com', NULL, 4), (10, 'Organic Social', 'facebook', 'social', NULL, 'm.facebook.com', NULL, 3),
 (11, 'Referral', NULL, NULL, NULL, 'www.apartmentguide.com', NULL, 6), (12, 'Display', 'gdn', 'display', 'retarget', NULL, NULL, 3),
 (13, 'Affiliates', 'partner_hub', 'affiliate', 'q2_partners', NULL, NULL, 1), (14, 'Direct', NULL, NULL, NULL, NULL, NULL, 15),
 (15, 'Unassigned', 'qr', 'print', NULL, NULL, NULL, 1)) v(k, channel, utm_source, utm_medium, utm_campaign, referrer_host, click_id_type, w);

-- sessions: each device 1+ sessions at sorted uniform times over the 90 days
CREATE TEMP TABLE bench_visits AS
WITH dev AS (
  SELECT d, md5('dev' || d)::uuid AS guid,
         (ARRAY['www.oakridge-apts.com','www.maple-court.com','www.riverside-lofts.com'])[1 + d % 3] AS site,
         1 + floor(-ln(1 - random()) * 1.7)::int AS k, random() < 0.03 AS bot
  FROM generate_series({first}, {last}) d
), raw AS (
  SELECT dev.*, i, now() - interval '90 days' + random() * interval '90 days' AS t
  FROM dev, generate_series(1, dev.k) i
)
SELECT d, guid, site, bot, t, row_number() OVER (PARTITION BY d ORDER BY t) AS idx,
       random() AS r_src, random() AS r_page, random() AS r_pv, random() AS r_pv2, random() AS r_ev, random() AS r_ev2
FROM raw;

INSERT INTO sessions (session_id, guid, session_index, site, status, started_at, last_seen_at, ended_at, end_reason,
  duration_s, landing_url, landing_path, exit_url, referrer, referrer_host, utm_source, utm_medium, utm_campaign,
  click_id, click_id_type, channel, ip, user_agent, browser, os, device_type, is_bot, pageviews, events, hits, is_bounce, version)
SELECT md5('s' || g.d || '-' || g.idx)::uuid, g.guid, g.idx, g.site,
       CASE WHEN x.last > now() - interval '30 minutes' THEN 'open' ELSE 'closed' END, g.t, x.last,
       CASE WHEN x.last > now() - interval '30 minutes' THEN NULL ELSE x.last END,
       CASE WHEN x.last > now() - interval '30 minutes' THEN NULL ELSE 'inactivity' END,
       extract(epoch FROM x.last - g.t), 'https://' || g.site || p.path, p.path, 'https://' || g.site || '/contact',
       coalesce('https://' || s.referrer_host || '/', ''), s.referrer_host, s.utm_source, s.utm_medium, s.utm_campaign,
       CASE WHEN s.click_id_type IS NOT NULL THEN md5('c' || g.d || g.idx) END, s.click_id_type,
       CASE WHEN g.bot THEN 'Organic Search' ELSE s.channel END, '203.0.113.0',
       CASE WHEN g.bot THEN 'Googlebot/2.1' ELSE 'Mozilla/5.0' END, 'Chrome', 'Linux', 'desktop', g.bot,
       x.pv, x.ev, x.pv + x.ev, x.pv = 1 AND x.ev = 0, 1
FROM bench_visits g
CROSS JOIN LATERAL (SELECT CASE WHEN g.r_pv < 0.25 THEN 1 ELSE 2 + floor(-ln(1 - g.r_pv2) * 11)::int END AS pv,
                           CASE WHEN g.r_ev < 0.5 THEN 0 ELSE 1 + floor(-ln(1 - g.r_ev2) * 1.2)::int END AS ev) c
CROSS JOIN LATERAL (SELECT c.pv, c.ev, g.t + ((c.pv - 1) * 45 + c.ev * 60) * interval '1 second' AS last) x
JOIN LATERAL (SELECT * FROM bench_sources WHERE cum >= g.r_src ORDER BY k LIMIT 1) s ON true
JOIN LATERAL (SELECT path FROM unnest(ARRAY['/', '/floorplans', '/amenities', '/gallery', '/neighborhood', '/contact',
              '/apply', '/pricing', '/specials', '/floorplans/2-bed', '/floorplans/studio', '/tour']) WITH ORDINALITY u(path, n)
              WHERE n >= 1 + floor(g.r_page * 12) ORDER BY n LIMIT 1) p ON true;

INSERT INTO pageviews (hit_id, session_id, guid, site, occurred_at, received_at, url, path, referrer, title)
SELECT md5('p' || s.session_id::text || n)::uuid, s.session_id, s.guid, s.site,
       s.started_at + (n - 1) * interval '45 seconds', s.started_at + (n - 1) * interval '45 seconds' + interval '40 milliseconds',
       CASE WHEN n = 1 THEN s.landing_url ELSE 'https://' || s.site || '/floorplans' END,
       CASE WHEN n = 1 THEN s.landing_path ELSE '/floorplans' END, '', 'Oakridge Apartments'
FROM sessions s JOIN bench_visits g ON s.session_id = md5('s' || g.d || '-' || g.idx)::uuid, generate_series(1, s.pageviews) n;

INSERT INTO events (hit_id, session_id, guid, site, occurred_at, received_at, name, module, url, properties)
SELECT md5('e' || s.session_id::text || n)::uuid, s.session_id, s.guid, s.site,
       s.started_at + ((s.pageviews - 1) * 45 + n * 60) * interval '1 second',
       s.started_at + ((s.pageviews - 1) * 45 + n * 60) * interval '1 second' + interval '40 milliseconds',
       e.name, e.module, 'https://' || s.site || '/contact', '{{}}'
FROM sessions s JOIN bench_visits g ON s.session_id = md5('s' || g.d || '-' || g.idx)::uuid, generate_series(1, s.events) n,
LATERAL (SELECT random() AS r, random() AS r2 WHERE n > 0) rr,
LATERAL (SELECT CASE WHEN rr.r < 0.12 THEN 'lead' WHEN rr.r < 0.17 THEN 'appointment' WHEN rr.r < 0.6 THEN 'chat_open'
                     WHEN rr.r < 0.8 THEN 'video_play' ELSE 'click_phone' END AS name,
                CASE WHEN rr.r < 0.12 THEN (CASE WHEN rr.r2 < 0.6 THEN 'contact_form' ELSE 'chat' END)
                     WHEN rr.r < 0.17 THEN 'scheduler' WHEN rr.r < 0.6 THEN 'chat' WHEN rr.r < 0.8 THEN 'gallery'
                     ELSE 'phone' END AS module) e;
DROP TABLE bench_visits;
