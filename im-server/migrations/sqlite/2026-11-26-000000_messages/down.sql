DROP TABLE read_cursors;
DROP TABLE entries;
DROP TABLE conversations;
