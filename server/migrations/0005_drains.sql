-- Host drains: the plan and its progress as one JSON document, rewritten at every change.
CREATE TABLE drains (
    id TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT,
    created_by TEXT NOT NULL,
    doc_json TEXT NOT NULL
);
CREATE INDEX drains_by_state ON drains (state);
CREATE INDEX drains_by_start ON drains (created_at_ms);
