DROP TABLE media_refs;
