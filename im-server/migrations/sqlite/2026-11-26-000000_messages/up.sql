-- Conversations' sequences, their entries (stored once per conversation: read diffusion),
-- and read cursors. Times are Unix milliseconds.

CREATE TABLE conversations (
    conversation_id TEXT   NOT NULL PRIMARY KEY,
    last_seq        BIGINT NOT NULL
);

CREATE TABLE entries (
    conversation_id  TEXT    NOT NULL,
    seq              BIGINT  NOT NULL,
    server_msg_id    TEXT    NOT NULL,
    sender_user_id   TEXT    NOT NULL,
    sender_device_id TEXT    NOT NULL,
    client_msg_id    TEXT    NOT NULL,
    kind             INTEGER NOT NULL, -- EntryKind: 1 content, 2 edit, 3 recall, 4 delete, 5 reaction, 6 notice
    target_seq       BIGINT  NOT NULL, -- the entry an edit/recall/delete/reaction acts on; 0 otherwise
    body             BLOB    NOT NULL, -- im.v1.MessageBody exactly as received
    server_time_ms   BIGINT  NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
-- Idempotent sends: one entry per (conversation, sender, client message id).
CREATE UNIQUE INDEX entries_by_client_id ON entries (conversation_id, sender_user_id, client_msg_id);

CREATE TABLE read_cursors (
    conversation_id TEXT   NOT NULL,
    user_id         TEXT   NOT NULL,
    read_seq        BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
