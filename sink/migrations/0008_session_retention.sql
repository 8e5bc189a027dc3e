-- 0008: retention of `sessions`, and the `devices` policy that goes with it (issue 17 §4).
-- Like 0006's expire_rows, a SECURITY DEFINER function the writer role may call: it gets no
-- DELETE on devices, only the right to expire sessions past a cutoff. Only closed sessions
-- expire, by started_at (indexed by 0001; a session lasts at most `max_session_length`, so
-- started_at bounds it). A device's row describes its first touch: it stays while any of its
-- sessions remains, and goes with its last one (a device seen again gets a new row).

CREATE FUNCTION expire_sessions(cutoff timestamptz, max_rows integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    deleted integer;
    guids uuid[];
BEGIN
    -- By ctid: one index scan finds the oldest batch, and the delete touches exactly those rows.
    WITH gone AS (
        DELETE FROM sessions WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM sessions WHERE started_at < cutoff AND status = 'closed' LIMIT max_rows))
        RETURNING guid)
    SELECT count(*), array_agg(DISTINCT guid) INTO deleted, guids FROM gone;
    -- A statement of its own: a sibling in the WITH would still see the sessions just deleted.
    DELETE FROM devices d WHERE d.guid = ANY(guids)
        AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.guid = d.guid);
    RETURN deleted;
END
$fn$;

REVOKE ALL ON FUNCTION expire_sessions(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION expire_sessions(timestamptz, integer) TO {{writer_role}};
