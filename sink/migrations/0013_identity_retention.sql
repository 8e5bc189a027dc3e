-- 0013: retention of the identity tables of 0009 (issue 18), run by the sink's retention job beside
-- 0008's sessions (TOUCHSTREAM_SINK_IDENTITIES_RETENTION_DAYS, the sessions retention by default).
--
--   identities      a (device, user id) row goes when that user id has not been seen on that device
--                   since the cutoff (last_seen);
--   device_links    a link has only the time it was made, so it goes when it was made before the
--                   cutoff and neither of its devices has had a session since: a link between devices
--                   still in use keeps joining them;
--   person_devices  the persons that held the devices of the rows deleted are built again from the
--                   edges that remain (person_relink): a person whose joining edge expired splits into
--                   the persons its remaining edges make, and a device with no edge left holds no row
--                   (it is its own person again). The result is what person_link() makes of the
--                   remaining edges from scratch, as after `forget` (tests compare the two).
--
-- 0012's queueing (the deletion trigger on person_devices, and person_link() for what is relinked)
-- covers every device whose person changed, so the per-person rollups follow at the next drain.

CREATE INDEX identities_last_seen ON identities (last_seen);
CREATE INDEX device_links_linked_at ON device_links (linked_at);

-- The persons holding `guids` built again from the identities and links that remain. Returns the rows
-- of person_devices that are gone for good (devices left without any edge).
CREATE FUNCTION person_relink(guids uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    members uuid[];
    deleted integer;
    edges record;
BEGIN
    PERFORM pg_advisory_xact_lock(person_lock_key());
    SELECT coalesce(array_agg(pd.guid), '{}') INTO members FROM person_devices pd
    WHERE (pd.person_id, pd.named) IN (SELECT person_id, named FROM person_devices WHERE guid = ANY(guids));
    DELETE FROM person_devices WHERE guid = ANY(members);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    SELECT coalesce(array_agg(e.guid), '{}') AS g, coalesce(array_agg(e.user_id), '{}') AS u,
           coalesce(array_agg(e.other), '{}') AS o
    INTO edges FROM (
        SELECT guid, user_id, NULL::uuid AS other FROM identities WHERE guid = ANY(members)
        UNION ALL
        SELECT guid, NULL, previous_guid FROM device_links WHERE guid = ANY(members)) e;
    PERFORM person_link(edges.g, edges.u, edges.o);
    RETURN deleted - (SELECT count(*) FROM person_devices WHERE guid = ANY(members));
END
$fn$;

-- At most `max_rows` identities and `max_rows` links past `cutoff` deleted (by ctid, as 0008's
-- expire_sessions), then their persons relinked. Returns the rows deleted from both tables.
CREATE FUNCTION expire_identities(cutoff timestamptz, max_rows integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    ids integer;
    links integer;
    touched uuid[];
    linked uuid[];
BEGIN
    WITH gone AS (
        DELETE FROM identities WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM identities WHERE last_seen < cutoff LIMIT max_rows))
        RETURNING guid)
    SELECT count(*), coalesce(array_agg(DISTINCT guid), '{}') INTO ids, touched FROM gone;
    WITH gone AS (
        DELETE FROM device_links WHERE ctid = ANY(ARRAY(
            SELECT k.ctid FROM device_links k
            WHERE k.linked_at < cutoff
              AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.guid = k.guid AND s.started_at >= cutoff)
              AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.guid = k.previous_guid AND s.started_at >= cutoff)
            LIMIT max_rows))
        RETURNING guid, previous_guid)
    SELECT count(*), coalesce(array_agg(guid) || array_agg(previous_guid), '{}') INTO links, linked FROM gone;
    IF ids + links > 0 THEN
        PERFORM person_relink(touched || linked);
    END IF;
    RETURN ids + links;
END
$fn$;

REVOKE ALL ON FUNCTION person_relink(uuid[]), expire_identities(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION expire_identities(timestamptz, integer) TO {{writer_role}};
