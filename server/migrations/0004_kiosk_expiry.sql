-- A kiosk link may expire (unix ms); NULL: it lasts until revoked.
ALTER TABLE kiosk_tokens ADD COLUMN expires_at_ms BIGINT;
