-- What processing learned of media (dimensions, thumbnails, ...), as JSON.
ALTER TABLE media ADD COLUMN facts TEXT NOT NULL DEFAULT '';
