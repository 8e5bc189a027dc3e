-- 0011: retention of `session_retractions` (issue 17 §4: every table that grows is bounded).
-- A retraction row is a tombstone: it stops a snapshot of a lower version from writing a
-- merged-away session back. It is needed only as long as such a snapshot can still reach the
-- sink (the `sessions` topic's retention, a replay of `hits` within its retention and the
-- sessionizer's lateness window); after that it only grows the table. The sink expires it by
-- `retracted_at` (set again when a higher retraction replaces it) through 0006's
-- `expire_rows`, redefined here with one more table: the writer role still gets no DELETE.
-- (0009 and 0010 belong to other branches; the runner applies whatever versions exist, in order.)

CREATE INDEX session_retractions_retracted_at ON session_retractions (retracted_at);

-- One statement for every table, its age column from a fixed list (a table not on it is refused),
-- so that the next table is one more line here rather than one more copy of the DELETE.
CREATE OR REPLACE FUNCTION expire_rows(tab text, cutoff timestamptz, max_rows integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    age_column text := CASE tab WHEN 'deadletter' THEN 'refused_at'
                                WHEN 'late_hits' THEN 'received_at'
                                WHEN 'session_retractions' THEN 'retracted_at' END;
    deleted integer;
BEGIN
    IF age_column IS NULL THEN
        RAISE EXCEPTION 'no retention for table %', tab USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- By ctid: one index scan finds the oldest batch, and the delete touches exactly those rows.
    EXECUTE format('DELETE FROM %I WHERE ctid = ANY(ARRAY(SELECT ctid FROM %I WHERE %I < $1 LIMIT $2))',
                   tab, tab, age_column)
        USING cutoff, max_rows;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$fn$;

-- (CREATE OR REPLACE keeps the function's owner and grants: 0006's stay as they were.)
