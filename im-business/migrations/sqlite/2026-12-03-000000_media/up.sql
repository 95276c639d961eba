-- Media: one row per upload and the media it becomes; each user's usage of its quotas.
CREATE TABLE media (
    media_id         TEXT    NOT NULL PRIMARY KEY,
    owner_user_id    TEXT    NOT NULL,
    client_upload_id TEXT    NOT NULL,
    kind             INTEGER NOT NULL,
    state            INTEGER NOT NULL,
    mime_type        TEXT    NOT NULL,
    size_bytes       BIGINT  NOT NULL,
    sha256_hex       TEXT    NOT NULL,
    file_name        TEXT    NOT NULL,
    detail           TEXT    NOT NULL,
    created_at_ms    BIGINT  NOT NULL,
    expires_at_ms    BIGINT  NOT NULL,
    updated_at_ms    BIGINT  NOT NULL
);
CREATE UNIQUE INDEX media_by_client_id ON media (owner_user_id, client_upload_id);
CREATE INDEX media_by_owner ON media (owner_user_id, created_at_ms);
CREATE INDEX media_by_sha256 ON media (sha256_hex);
CREATE INDEX media_by_expiry ON media (state, expires_at_ms);
CREATE TABLE media_usage (
    user_id         TEXT   NOT NULL PRIMARY KEY,
    stored_bytes    BIGINT NOT NULL,
    pending_uploads BIGINT NOT NULL
);
