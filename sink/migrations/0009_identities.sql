-- 0009: identity stitching (issue 18, SPEC section 5): which devices belong to one person.
--
--   identities      a device (guid) seen with a site's user id (`identify()`, or a server-side hit's
--                   `user_id`), with the first and last time (occurred_at) of a hit that carried it;
--   device_links    a device that replaced another: a hit's `previous_guid` (cleared storage, or a
--                   cross-domain link that adopted a GUID), with the time of the first such hit;
--   person_devices  every device of a known person with one person_id: devices sharing a user id
--                   are one person, linked devices are one person (old -> new -> newer), and a user
--                   id seen on any device of a chain covers the chain.
--
-- The sink writes the first two from the `events` topic (the sessionizer forwards both fields on
-- each pageview and event record) as idempotent upserts: a replay changes nothing, first_seen
-- only moves earlier and last_seen only later.
--
-- person_devices is a table the sink keeps, not a view: a recursive view recomputes every
-- person's component on every read, and user ids come from clients, so one id shared by many
-- devices (a test account, or someone sending the same id from many GUIDs) makes a component of
-- any size for every query. bench/identity_bench.py measures both at a realistic size. The table
-- is kept by incremental union (person_link, below): each new edge merges at most two
-- components, and only the rows of the component whose id changes are rewritten.
--
-- person_id is the least user id of the person's devices (named = true), or, for a chain of
-- devices that never identified, the least of their GUIDs as text (named = false). So it is the
-- same whatever order the edges arrive in (a replay into an empty database gives the same ids),
-- and a person's id changes only when a merge brings a smaller user id.

CREATE TABLE identities (
    guid        uuid NOT NULL,
    user_id     text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 256),
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    PRIMARY KEY (guid, user_id)
);
CREATE INDEX identities_user_id ON identities (user_id);

CREATE TABLE device_links (
    guid           uuid NOT NULL,
    previous_guid  uuid NOT NULL,
    linked_at      timestamptz NOT NULL,
    PRIMARY KEY (guid, previous_guid)
);
CREATE INDEX device_links_previous_guid ON device_links (previous_guid);

CREATE TABLE person_devices (
    guid       uuid PRIMARY KEY,
    person_id  text NOT NULL,
    named      boolean NOT NULL  -- person_id is a user id (else the least GUID of a chain)
);
CREATE INDEX person_devices_person ON person_devices (person_id, named);

CREATE FUNCTION person_lock_key() RETURNS bigint
LANGUAGE sql STABLE SET search_path = {{schema}}, pg_temp AS $fn$
SELECT hashtextextended('touchstream.persons.' || current_schema(), 0)
$fn$;

-- Union of the components at both ends of each edge: an identity (guid, user_id: other_guid
-- NULL) or a link (guid, other_guid: user_id NULL). The merged person takes the least id, named
-- ids first. Writers of person_devices hold one advisory lock per schema, so two sink workers
-- merging the same person take turns, and the second (a new snapshot per statement) sees the
-- first's committed edges and persons: every committed edge has been merged.
CREATE FUNCTION person_link(guids uuid[], user_ids text[], other_guids uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    i integer;
    g uuid;
    u text;
    o uuid;
    p1 person_devices%ROWTYPE;
    p2 person_devices%ROWTYPE;
    best_id text;
    best_named boolean;
    changed integer := 0;
    n integer;
BEGIN
    IF coalesce(array_length(guids, 1), 0) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(person_lock_key());
    FOR i IN 1 .. array_length(guids, 1) LOOP
        g := guids[i];
        u := user_ids[i];
        o := other_guids[i];
        SELECT * INTO p1 FROM person_devices WHERE guid = g;
        IF NOT FOUND THEN  -- a device new to persons: a person of its own until merged
            p1.guid := g;
            p1.person_id := g::text;
            p1.named := false;
        END IF;
        IF u IS NOT NULL THEN
            -- every device of this user id is one person already: any one of them says which
            SELECT pd.* INTO p2 FROM identities x JOIN person_devices pd ON pd.guid = x.guid
            WHERE x.user_id = u AND x.guid <> g LIMIT 1;
            IF NOT FOUND THEN
                p2.guid := NULL;
                p2.person_id := u;
                p2.named := true;
            END IF;
        ELSE
            SELECT * INTO p2 FROM person_devices WHERE guid = o;
            IF NOT FOUND THEN
                p2.guid := o;
                p2.person_id := o::text;
                p2.named := false;
            END IF;
        END IF;
        best_id := p1.person_id;
        best_named := p1.named;
        IF (NOT p2.named, p2.person_id) < (NOT best_named, best_id) THEN
            best_id := p2.person_id;
            best_named := p2.named;
        END IF;
        IF u IS NOT NULL AND (false, u) < (NOT best_named, best_id) THEN
            best_id := u;
            best_named := true;
        END IF;
        UPDATE person_devices SET person_id = best_id, named = best_named
        WHERE (person_id, named) IN ((p1.person_id, p1.named), (p2.person_id, p2.named))
          AND (person_id, named) IS DISTINCT FROM (best_id, best_named);
        GET DIAGNOSTICS n = ROW_COUNT;
        changed := changed + n;
        INSERT INTO person_devices (guid, person_id, named)
        SELECT x, best_id, best_named FROM unnest(ARRAY[g, o]) x WHERE x IS NOT NULL
        ON CONFLICT (guid) DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        changed := changed + n;
    END LOOP;
    RETURN changed;
END
$fn$;

-- After devices are erased (`touchstream forget`, their identities and links already deleted): the
-- persons they belonged to are built again from the edges that remain (a person may fall apart
-- into several, or end). Returns the rows of person_devices it deleted for good: the erased
-- devices' own, and those of devices that no longer belong to any person without them.
CREATE FUNCTION person_rebuild(gone uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    members uuid[];
    deleted integer;
    g uuid[];
    u text[];
    o uuid[];
BEGIN
    PERFORM pg_advisory_xact_lock(person_lock_key());
    SELECT coalesce(array_agg(pd.guid), '{}') INTO members FROM person_devices pd
    WHERE (pd.person_id, pd.named) IN (SELECT person_id, named FROM person_devices WHERE guid = ANY(gone))
      AND pd.guid <> ALL(gone);
    DELETE FROM person_devices WHERE guid = ANY(gone) OR guid = ANY(members);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    SELECT coalesce(array_agg(e.guid), '{}'), coalesce(array_agg(e.user_id), '{}'), coalesce(array_agg(e.other), '{}')
    INTO g, u, o FROM (
        SELECT guid, user_id, NULL::uuid AS other FROM identities WHERE guid = ANY(members)
        UNION ALL
        SELECT guid, NULL, previous_guid FROM device_links WHERE guid = ANY(members)) e;
    PERFORM person_link(g, u, o);
    RETURN deleted - (SELECT count(*) FROM person_devices WHERE guid = ANY(members));
END
$fn$;

REVOKE ALL ON FUNCTION person_lock_key(), person_link(uuid[], text[], uuid[]), person_rebuild(uuid[]) FROM PUBLIC;
-- The writer: upserts identities and links, and merges persons only through person_link.
GRANT SELECT, INSERT, UPDATE ON identities, device_links TO {{writer_role}};
GRANT SELECT ON person_devices TO {{writer_role}};
GRANT EXECUTE ON FUNCTION person_lock_key(), person_link(uuid[], text[], uuid[]) TO {{writer_role}};
-- The analyst reads all three (the per-person attribution views join person_devices).
GRANT SELECT ON identities, device_links, person_devices TO {{analyst_role}};
