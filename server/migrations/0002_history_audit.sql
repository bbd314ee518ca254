-- Samples of each migration, downsampled (at most a few thousand per migration).
CREATE TABLE migration_samples (
    id           INTEGER PRIMARY KEY,
    migration_id TEXT NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
    at_ms        BIGINT NOT NULL,
    sample_json  TEXT NOT NULL
);
CREATE INDEX migration_samples_by_migration ON migration_samples (migration_id, at_ms);

-- Pass boundaries: remaining memory when each pre-copy pass began.
CREATE TABLE migration_iterations (
    migration_id        TEXT NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
    iteration           INTEGER NOT NULL,
    at_ms               BIGINT NOT NULL,
    elapsed_ms          BIGINT NOT NULL,
    mem_remaining_bytes BIGINT NOT NULL,
    PRIMARY KEY (migration_id, iteration)
);

-- Who did what. A row is written (result 'pending') before an action is carried out and
-- completed after, so an action is never reported done without its record.
CREATE TABLE audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms        BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    client_addr  TEXT,
    action       TEXT NOT NULL,
    vm           TEXT,
    migration_id TEXT,
    details      TEXT NOT NULL,
    result       TEXT NOT NULL
);
CREATE INDEX audit_by_migration ON audit (migration_id);
