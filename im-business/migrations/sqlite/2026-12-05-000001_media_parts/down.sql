ALTER TABLE media DROP COLUMN part_bytes;
ALTER TABLE media DROP COLUMN multipart_id;
