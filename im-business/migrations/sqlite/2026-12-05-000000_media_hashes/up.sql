-- Verdicts on bytes by their digest: blocked (quarantined wherever uploaded) or allowed
-- (released by an operator: not scanned or quarantined automatically again).
CREATE TABLE media_hashes (
    sha256_hex TEXT PRIMARY KEY NOT NULL,
    verdict INTEGER NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
