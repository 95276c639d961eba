DROP TABLE media_hashes;
