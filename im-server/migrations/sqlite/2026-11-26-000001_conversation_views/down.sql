DROP INDEX entries_by_kind;
DROP INDEX entries_by_target;
DROP TABLE direct_members;
