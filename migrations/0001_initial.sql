-- The journal: one row per accepted request body, kept for the longest rule lookback.
CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    -- positions of the events that were new, little-endian u32s; NULL when all were
    accepted BLOB
);
CREATE INDEX batches_received ON batches (received_ms);

-- Dedup memory: every key of every accepted event, kept for the dedup horizon.
CREATE TABLE seen (
    key INTEGER PRIMARY KEY,
    received_s INTEGER NOT NULL
);
CREATE INDEX seen_received ON seen (received_s);

-- Alert state: one row per alert identity (rule + group labels).
CREATE TABLE alerts (
    fingerprint TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    labels TEXT NOT NULL,
    status TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    resolved_ms INTEGER,
    seq INTEGER NOT NULL,
    -- JSON object: route index -> last firing notification time (ms)
    notified TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);

-- Outbox: every notification to every contact, until delivered or dead.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    contact TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    notification TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    last_error TEXT,
    created_ms INTEGER NOT NULL,
    done_ms INTEGER
);
CREATE INDEX outbox_due ON outbox (contact, status, next_attempt_ms);

-- Where a contact put the message for an alert, so a resolution can update it.
CREATE TABLE messages (
    fingerprint TEXT NOT NULL,
    contact TEXT NOT NULL,
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    PRIMARY KEY (fingerprint, contact)
);
