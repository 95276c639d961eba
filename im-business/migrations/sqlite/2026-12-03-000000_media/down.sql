DROP TABLE media_usage;
DROP TABLE media;
