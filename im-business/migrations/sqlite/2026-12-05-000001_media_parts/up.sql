-- Uploads in parts: the object store's id of the upload, and the size of each part but the last.
ALTER TABLE media ADD COLUMN multipart_id TEXT NOT NULL DEFAULT '';
ALTER TABLE media ADD COLUMN part_bytes BIGINT NOT NULL DEFAULT 0;
