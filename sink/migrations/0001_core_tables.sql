-- 0001: the tables the sink writes (SPEC section 5).
--
-- Runs with search_path set to the target schema, so no name here is schema-qualified.
-- Placeholders ({{...}}) are replaced by quoted identifiers / literals before running; the
-- checksum is taken over this template, so changing a setting never looks like an edit.

-- Sessions: one row per session_id, moved only to a higher `version` (the sink's upsert).
-- fillfactor leaves room on each page so the frequent updates of open sessions stay HOT
-- (no indexed column changes while a session grows).
CREATE TABLE sessions (
    session_id     uuid PRIMARY KEY,
    guid           uuid NOT NULL,
    session_index  integer NOT NULL,
    site           text NOT NULL,
    status         text NOT NULL CHECK (status IN ('open', 'closed')),
    started_at     timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    ended_at       timestamptz,
    end_reason     text,
    duration_s     double precision NOT NULL,
    landing_url    text NOT NULL,
    landing_path   text NOT NULL,
    exit_url       text,
    referrer       text NOT NULL DEFAULT '',
    referrer_host  text,
    utm_source     text,
    utm_medium     text,
    utm_campaign   text,
    utm_term       text,
    utm_content    text,
    utm_id         text,
    click_id       text,
    click_id_type  text,
    channel        text NOT NULL,
    ip             text,
    user_agent     text NOT NULL DEFAULT '',
    browser        text,
    os             text,
    device_type    text,
    is_bot         boolean NOT NULL DEFAULT false,
    pageviews      integer NOT NULL,
    events         integer NOT NULL,
    hits           integer NOT NULL,
    is_bounce      boolean NOT NULL,
    version        bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);

CREATE INDEX sessions_guid_started_at ON sessions (guid, started_at);
CREATE INDEX sessions_started_at ON sessions (started_at);

-- Pageviews and events: range-partitioned by UTC day on occurred_at. The primary key has to
-- include the partition key; occurred_at is deterministic per hit, so a replayed hit lands once.
-- There is deliberately no DEFAULT partition: the sink creates each day's partition before it
-- writes a row for that day (ahead of time, and on demand for the days present in a batch), and
-- a default partition would have to be emptied by hand before such a day could be created.
CREATE TABLE pageviews (
    hit_id       uuid NOT NULL,
    session_id   uuid NOT NULL,
    guid         uuid NOT NULL,
    site         text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    url          text NOT NULL,
    path         text NOT NULL,
    referrer     text NOT NULL DEFAULT '',
    title        text,
    PRIMARY KEY (occurred_at, hit_id)
) PARTITION BY RANGE (occurred_at);

CREATE TABLE events (
    hit_id       uuid NOT NULL,
    session_id   uuid NOT NULL,
    guid         uuid NOT NULL,
    site         text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    name         text NOT NULL,
    module       text,
    url          text NOT NULL,
    properties   jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (occurred_at, hit_id)
) PARTITION BY RANGE (occurred_at);

-- Events by name. Day partitions already narrow a query by time, so the index needs only the
-- name: with B-tree deduplication it stays small, and it costs a tenth less to maintain per row
-- than (name, occurred_at) (bench/sink_bench.py).
CREATE INDEX events_name ON events (name);

-- Devices: derived from sessions (recomputed by the sink for the devices a batch touched),
-- so replays and out-of-order snapshots cannot double count.
CREATE TABLE devices (
    guid                uuid PRIMARY KEY,
    first_seen_at       timestamptz NOT NULL,
    last_seen_at        timestamptz NOT NULL,
    sessions            integer NOT NULL,
    first_session_id    uuid NOT NULL,
    first_utm_source    text,
    first_utm_medium    text,
    first_utm_campaign  text,
    first_channel       text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Hits that fit no session (SPEC rule 6), once per hit_id.
CREATE TABLE late_hits (
    hit_id       uuid PRIMARY KEY,
    guid         uuid NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    reason       text NOT NULL,
    hit          jsonb NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX late_hits_guid ON late_hits (guid);

-- Everything refused, by any component. One row per Kafka record the sink consumed
-- (consumed_*: its position and its Kafka timestamp, which tells a recreated topic's record 0
-- from the old one's), so replays land once. record_* is where the refused record itself was,
-- when it was on Kafka (the edge refuses HTTP items that never were).
CREATE TABLE deadletter (
    consumed_topic      text NOT NULL,
    consumed_partition  integer NOT NULL,
    consumed_offset     bigint NOT NULL,
    consumed_timestamp  timestamptz NOT NULL,
    source              text NOT NULL,
    reason              text NOT NULL,
    errors              jsonb NOT NULL DEFAULT '[]',
    record_topic        text,
    record_partition    integer,
    record_offset       bigint,
    record_key          text,
    hit_id              text,
    refused_at          timestamptz NOT NULL,
    written_at          timestamptz NOT NULL DEFAULT now(),
    payload             bytea NOT NULL,
    PRIMARY KEY (consumed_topic, consumed_partition, consumed_offset, consumed_timestamp)
);

CREATE INDEX deadletter_refused_at ON deadletter (refused_at);

-- Day partitions. SECURITY DEFINER: creating a partition needs ownership of the parent, which
-- the sink's writer role does not have; these two functions are all it may do in DDL.
-- `SET search_path FROM CURRENT` pins them to this schema.
CREATE FUNCTION ensure_day_partitions(parent text, days date[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    d        date;
    child    text;
    created  integer := 0;
BEGIN
    IF parent NOT IN ('pageviews', 'events') THEN
        RAISE EXCEPTION 'not a day-partitioned table: %', parent USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Workers may race for the same day: one at a time per table.
    PERFORM pg_advisory_xact_lock(hashtextextended('touchstream.partitions.' || current_schema() || '.' || parent, 0));
    FOREACH d IN ARRAY days LOOP
        child := parent || '_p' || to_char(d, 'YYYYMMDD');
        IF to_regclass(format('%I.%I', current_schema(), child)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                           current_schema(), child, current_schema(), parent,
                           d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$fn$;

CREATE FUNCTION drop_day_partitions_before(parent text, cutoff date) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    child    text;
    dropped  text[] := '{}';
BEGIN
    IF parent NOT IN ('pageviews', 'events') THEN
        RAISE EXCEPTION 'not a day-partitioned table: %', parent USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('touchstream.partitions.' || current_schema() || '.' || parent, 0));
    FOR child IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = format('%I.%I', current_schema(), parent)::regclass
          AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I.%I', current_schema(), child);
        dropped := dropped || child;
    END LOOP;
    RETURN dropped;
END
$fn$;

-- Functions are executable by PUBLIC unless revoked; these must not be.
REVOKE ALL ON FUNCTION ensure_day_partitions(text, date[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION drop_day_partitions_before(text, date) FROM PUBLIC;
