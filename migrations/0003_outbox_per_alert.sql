-- Deliveries for one alert go out in order: a worker looks for an earlier pending row of
-- the same alert before sending a later one.
CREATE INDEX outbox_alert ON outbox (contact, fingerprint, status, id);

-- Failed attempts that were not rate limits: the backoff grows with these only, so a run
-- of 429s (already paced by Retry-After) does not stretch the next retry.
ALTER TABLE outbox ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
