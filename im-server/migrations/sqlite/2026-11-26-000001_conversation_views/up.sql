-- Which 1:1 conversations each user has (written when a conversation gets its first entry),
-- and the lookups the views of a conversation need: entries acting on an entry (edits,
-- recalls, deletes, reactions) and the newest content entry.

CREATE TABLE direct_members (
    user_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
);

CREATE INDEX entries_by_target ON entries (conversation_id, target_seq);
CREATE INDEX entries_by_kind ON entries (conversation_id, kind, seq);
