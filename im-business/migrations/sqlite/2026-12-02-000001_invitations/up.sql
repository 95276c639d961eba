-- Invitations to groups, for users who join only once they accept: one per group and user.
CREATE TABLE invitations (
    group_id        TEXT   NOT NULL,
    user_id         TEXT   NOT NULL,
    inviter_user_id TEXT   NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX invitations_by_user ON invitations (user_id, created_at_ms);
