-- Kiosk tokens: one per wall screen. Only the SHA-256 of the secret is kept.
CREATE TABLE kiosk_tokens (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    label           TEXT NOT NULL,
    secret_sha256   TEXT NOT NULL UNIQUE,
    created_at_ms   BIGINT NOT NULL,
    created_by      TEXT NOT NULL,
    last_used_at_ms BIGINT,
    revoked_at_ms   BIGINT
);
