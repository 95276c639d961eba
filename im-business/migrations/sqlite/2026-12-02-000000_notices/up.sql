-- System notices and history from join.

-- im.v1.HistoryVisibility: 1 from join, 2 the whole history (what groups made before had).
ALTER TABLE groups ADD COLUMN history_visibility INTEGER NOT NULL DEFAULT 2;

-- The first seq the member may see: 1 the whole history; 0 while the notice of the add is
-- not written yet (then the notice's seq).
ALTER TABLE members ADD COLUMN visible_from_seq BIGINT NOT NULL DEFAULT 1;

-- Notices of stored changes not yet appended to the group's conversation: written in the
-- change's transaction, deleted once a core node has appended them.
CREATE TABLE notices (
    group_id      TEXT   NOT NULL,
    version       BIGINT NOT NULL, -- the group's version after the change
    body          BLOB   NOT NULL, -- the encoded im.v1.SystemNotice
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, version)
);
