-- Deliveries for one alert go out in order: a pending row is ready to send only when no
-- earlier row of the same alert to the same contact is still pending.
CREATE INDEX outbox_alert ON outbox (contact, fingerprint, status, id);
CREATE VIEW outbox_ready AS
    SELECT * FROM outbox o
    WHERE status = 'pending'
      AND NOT EXISTS (SELECT 1 FROM outbox earlier
        WHERE earlier.contact = o.contact AND earlier.fingerprint = o.fingerprint
          AND earlier.status = 'pending' AND earlier.id < o.id);

-- Failed attempts that were not rate limits: the backoff grows with these only, so a run
-- of 429s (already paced by Retry-After) does not stretch the next retry.
ALTER TABLE outbox ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
