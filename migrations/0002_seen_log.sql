-- Dedup keys become an append-only log: lookups are answered from memory (loaded from
-- this log at start-up), so writes are sequential instead of random B-tree inserts.
CREATE TABLE seen_log (
    id INTEGER PRIMARY KEY,
    key INTEGER NOT NULL,
    received_s INTEGER NOT NULL
);
INSERT INTO seen_log (key, received_s) SELECT key, received_s FROM seen ORDER BY received_s;
DROP TABLE seen;
