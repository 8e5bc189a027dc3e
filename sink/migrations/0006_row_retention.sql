-- 0006: retention of `deadletter` and `late_hits` (issue 17: a dead-letter flood must not grow
-- the database for ever). The sink deletes rows older than its settings in small batches, each
-- its own short transaction, through one SECURITY DEFINER function: the writer role gets no
-- DELETE on these tables, only the right to expire rows past a cutoff.
-- (0005 belongs to the dashboard branch; the runner applies whatever versions exist, in order.)

-- late_hits expire by received_at (when the edge took the hit); deadletter by refused_at, which
-- 0001 indexed already.
CREATE INDEX late_hits_received_at ON late_hits (received_at);

CREATE FUNCTION expire_rows(tab text, cutoff timestamptz, max_rows integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    deleted integer;
BEGIN
    -- By ctid: one index scan finds the oldest batch, and the delete touches exactly those rows.
    IF tab = 'deadletter' THEN
        DELETE FROM deadletter WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM deadletter WHERE refused_at < cutoff LIMIT max_rows));
    ELSIF tab = 'late_hits' THEN
        DELETE FROM late_hits WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM late_hits WHERE received_at < cutoff LIMIT max_rows));
    ELSE
        RAISE EXCEPTION 'no retention for table %', tab USING ERRCODE = 'invalid_parameter_value';
    END IF;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$fn$;

REVOKE ALL ON FUNCTION expire_rows(text, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION expire_rows(text, timestamptz, integer) TO {{writer_role}};
