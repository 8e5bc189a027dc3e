-- 0004: sessions that do not depend on arrival order (SPEC rule 6, amended).
--
-- A late hit can merge sessions: the sessionizer publishes a retraction of each merged-away
-- session (naming the session it merged into, with a version from the device's counter) and a
-- move for every hit that changed session. The sink, in the same transaction as the rows:
--   * deletes a retracted session's row (only over a lower version) and records the
--     retraction here, so that a snapshot of a lower version replayed later cannot bring the row
--     back; a snapshot of a higher version (a split that gave the id back) replaces it;
--   * re-points moved pageviews and events (UPDATE of session_id by primary key);
--   * recomputes the devices of the sessions touched.
-- Not granted to the analyst role: no analyst-visible row names a retracted session.

CREATE TABLE session_retractions (
    session_id    uuid PRIMARY KEY,
    guid          uuid NOT NULL,
    merged_into   uuid NOT NULL,
    version       bigint NOT NULL,
    retracted_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX session_retractions_guid ON session_retractions (guid);

GRANT SELECT, INSERT, UPDATE, DELETE ON session_retractions TO {{writer_role}};
GRANT DELETE ON sessions TO {{writer_role}};
GRANT UPDATE (session_id) ON pageviews, events TO {{writer_role}};
