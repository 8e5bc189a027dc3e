-- 0009: identities (issue 18, identity side) — a STUB on the attribution branch.
--
-- The identity branch owns this migration: its real 0009 replaces this file at merge and keeps
-- these names and columns. Attribution (0010) reads only `person_devices`: one row per GUID that
-- belongs to a known person; a GUID not in it is its own person.

CREATE TABLE identities (guid uuid NOT NULL, user_id text NOT NULL,
    first_seen timestamptz NOT NULL, last_seen timestamptz NOT NULL, PRIMARY KEY (guid, user_id));
CREATE TABLE device_links (guid uuid NOT NULL, previous_guid uuid NOT NULL,
    linked_at timestamptz NOT NULL, PRIMARY KEY (guid, previous_guid));
CREATE VIEW person_devices AS SELECT guid, min(user_id) AS person_id FROM identities GROUP BY guid;

GRANT SELECT, INSERT, UPDATE ON identities, device_links TO {{writer_role}};
GRANT SELECT ON identities, device_links, person_devices TO {{analyst_role}};
