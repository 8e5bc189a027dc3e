-- 0003: roles. The sink writes as {{writer_role}}; analysts read as {{analyst_role}}.
--
-- Roles are cluster-wide, so they are created only when missing (and a concurrent creation by
-- another schema's migration is not an error). Both are NOLOGIN: grant them to login roles
-- (GRANT touchstream_writer TO sink_login), or ALTER ROLE ... LOGIN PASSWORD ... yourself.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {{writer_role_name}}) THEN
        BEGIN
            CREATE ROLE {{writer_role}} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {{analyst_role_name}}) THEN
        BEGIN
            CREATE ROLE {{analyst_role}} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
END
$roles$;

GRANT USAGE ON SCHEMA {{schema}} TO {{writer_role}}, {{analyst_role}};

-- The writer: insert everything, update what is upserted, create day partitions through the
-- SECURITY DEFINER functions. No DELETE, no DDL of its own.
GRANT SELECT, INSERT, UPDATE ON sessions, devices TO {{writer_role}};
GRANT SELECT, INSERT ON pageviews, events, late_hits, deadletter TO {{writer_role}};
GRANT SELECT ON conversion_events, schema_migrations TO {{writer_role}};
GRANT EXECUTE ON FUNCTION ensure_day_partitions(text, date[]) TO {{writer_role}};
GRANT EXECUTE ON FUNCTION drop_day_partitions_before(text, date) TO {{writer_role}};

-- The analyst: SELECT only, and not the raw bytes of dead letters (column-level grant;
-- `deadletter_info` gives every other column plus the payload size).
GRANT SELECT ON sessions, pageviews, events, devices, late_hits, conversion_events, schema_migrations,
                conversions, attribution_touches, attribution_credits, attribution_report
   TO {{analyst_role}};
GRANT SELECT (consumed_topic, consumed_partition, consumed_offset, consumed_timestamp, source, reason, errors,
              record_topic, record_partition, record_offset, record_key, hit_id, refused_at, written_at)
   ON deadletter TO {{analyst_role}};

CREATE VIEW deadletter_info AS
SELECT consumed_topic, consumed_partition, consumed_offset, consumed_timestamp, source, reason, errors, record_topic,
       record_partition, record_offset, record_key, hit_id, refused_at, written_at,
       octet_length(payload) AS payload_bytes
FROM deadletter;

GRANT SELECT ON deadletter_info TO {{analyst_role}};
