-- References to media by the entries that show it: (conversation, seq), or seq 0 for one
-- allowed at send and not confirmed yet. Unreferenced media is deleted after a grace period.
CREATE TABLE media_refs (
    media_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (media_id, conversation_id, seq)
);
CREATE INDEX media_refs_by_entry ON media_refs (conversation_id, seq);
-- Media completed before references were counted is kept as referenced.
INSERT INTO media_refs SELECT media_id, '', 0, updated_at_ms FROM media WHERE state IN (2, 3);
