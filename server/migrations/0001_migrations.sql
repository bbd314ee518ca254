-- Every migration attempt Converge started or found, with its latest summary.
CREATE TABLE migrations (
    id            TEXT PRIMARY KEY,
    vm_uuid       TEXT NOT NULL,
    vm_name       TEXT NOT NULL,
    source        TEXT NOT NULL,
    destination   TEXT,
    state         TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    ended_at_ms   BIGINT,
    started_by    TEXT,
    summary_json  TEXT NOT NULL
);
CREATE INDEX migrations_by_state ON migrations (state);
CREATE INDEX migrations_by_vm ON migrations (vm_uuid, started_at_ms);
