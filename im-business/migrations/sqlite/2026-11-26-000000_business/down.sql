DROP TABLE token_revocations;
DROP TABLE contacts;
DROP TABLE blocks;
DROP TABLE members;
DROP TABLE groups;
DROP TABLE users;
