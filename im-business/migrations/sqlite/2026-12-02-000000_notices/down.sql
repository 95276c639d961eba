DROP TABLE notices;
ALTER TABLE members DROP COLUMN visible_from_seq;
ALTER TABLE groups DROP COLUMN history_visibility;
