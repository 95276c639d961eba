-- Business data: users, groups and members, mutes, blocks, contacts, token revocations.
-- Times are Unix milliseconds. Enums are the protocol's numbers (im.v1).

CREATE TABLE users (
    user_id       TEXT    NOT NULL PRIMARY KEY,
    display_name  TEXT    NOT NULL,
    avatar_url    TEXT    NOT NULL,
    extra_json    TEXT    NOT NULL,
    active        BOOLEAN NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    updated_at_ms BIGINT  NOT NULL
);

CREATE TABLE groups (
    group_id      TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    avatar_url    TEXT    NOT NULL,
    owner_user_id TEXT    NOT NULL,
    kind          INTEGER NOT NULL, -- im.v1.ConversationType: 2 group, 3 channel
    join_policy   INTEGER NOT NULL, -- im.v1.JoinPolicy
    max_members   INTEGER NOT NULL,
    mute_all      BOOLEAN NOT NULL,
    extra_json    TEXT    NOT NULL,
    member_count  BIGINT  NOT NULL, -- kept in step by every membership change
    dismissed     BOOLEAN NOT NULL,
    version       BIGINT  NOT NULL, -- bumped by every change of the group or its members
    created_at_ms BIGINT  NOT NULL
);

CREATE TABLE members (
    group_id       TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    role           INTEGER NOT NULL, -- im.v1.GroupRole
    joined_at_ms   BIGINT  NOT NULL,
    muted_until_ms BIGINT  NOT NULL, -- 0: not muted
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, group_id);

CREATE TABLE blocks (
    user_id         TEXT   NOT NULL,
    blocked_user_id TEXT   NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked_user_id)
);

CREATE TABLE contacts (
    user_id         TEXT   NOT NULL,
    contact_user_id TEXT   NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (user_id, contact_user_id)
);

-- Tokens of (user, device) issued before revoked_before_ms are invalid; device '' is every device.
CREATE TABLE token_revocations (
    user_id           TEXT   NOT NULL,
    device_id         TEXT   NOT NULL,
    revoked_before_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
