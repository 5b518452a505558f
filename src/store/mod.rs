//! The SQLite store: the only module that contains SQL.
//!
//! The journal (`journal.rs`) writes accepted batches and dedup keys with group commits;
//! this file opens the database, applies migrations, and reads and writes alert state,
//! the outbox and message references. It makes no decisions: what to store is decided by
//! `alerts` and `notify`.

pub mod journal;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// Migrations in order; `PRAGMA user_version` records how many have been applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_initial.sql"),
    include_str!("../../migrations/0002_seen_log.sql"),
    include_str!("../../migrations/0003_outbox_per_alert.sql"),
];

/// Errors from the store. Every one means the operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// Persistent state of one alert, as `alerts` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub fingerprint: String,
    pub rule: String,
    pub labels: String,
    pub status: String,
    pub started_ms: i64,
    pub resolved_ms: Option<i64>,
    pub seq: i64,
    pub notified: String,
}

/// A notification to put in the outbox with the alert change that caused it.
#[derive(Debug, Clone)]
pub struct OutboxInsert {
    pub idempotency_key: String,
    pub contact: String,
    pub fingerprint: String,
    pub notification: String,
    pub deadline_ms: i64,
}

/// One pending delivery, as the outbox worker sees it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub contact: String,
    pub fingerprint: String,
    pub notification: String,
    /// Every attempt made so far.
    pub attempts: i64,
    /// Attempts that failed other than by a rate limit; the backoff follows these.
    pub failures: i64,
    pub deadline_ms: i64,
}

/// Counts of outbox rows by status, for `/readyz` and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: i64,
    pub sent: i64,
    pub dead: i64,
}

impl Store {
    /// Opens (creating if needed) the database at `path` in WAL mode with full fsync on
    /// commit, and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_error)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            // Checkpoints run in `checkpoint_forever`, on their own connection, instead
            // of inside whichever commit crosses the threshold (the journal's, mostly).
            .pragma("wal_autocheckpoint", "0")
            .pragma("cache_size", "-65536");
        // Local connections are cheap to keep and costly to lose mid-burst: never
        // close them for idleness or age.
        // No minimum: a connection opened in the background while the migrations run
        // would race them for the new file's first write lock.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let applied: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await?;
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            // IMMEDIATE takes the write lock up front, waiting out `busy_timeout`; a
            // deferred transaction that upgrades later fails at once when it collides.
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "PRAGMA user_version = {}",
                index + 1
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Copies committed WAL frames into the database file without blocking writers, and
    /// restarts the WAL once it is fully copied. Returns the WAL's size in frames.
    pub async fn checkpoint(&self) -> Result<i64, StoreError> {
        let (_busy, log, copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&self.pool)
                .await?;
        Ok(log.max(copied))
    }

    /// Checkpoints everything and starts the WAL over, waiting for writers.
    pub async fn restart_wal(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Answers whether the database can be queried, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// All alerts with their state, to restore the alert book at start-up.
    pub async fn load_alerts(&self) -> Result<Vec<AlertRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT fingerprint, rule, labels, status, started_ms, resolved_ms, seq, notified
             FROM alerts",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AlertRow {
                fingerprint: r.get(0),
                rule: r.get(1),
                labels: r.get(2),
                status: r.get(3),
                started_ms: r.get(4),
                resolved_ms: r.get(5),
                seq: r.get(6),
                notified: r.get(7),
            })
            .collect())
    }

    /// Saves alert changes and the notifications they cause in one transaction, so a
    /// crash leaves either both or neither.
    pub async fn apply_alert_changes(
        &self,
        alerts: &[AlertRow],
        outbox: &[OutboxInsert],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for a in alerts {
            sqlx::query(
                "INSERT INTO alerts (fingerprint, rule, labels, status, started_ms, resolved_ms,
                   seq, notified, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (fingerprint) DO UPDATE SET status = excluded.status,
                   started_ms = excluded.started_ms, resolved_ms = excluded.resolved_ms,
                   seq = excluded.seq, notified = excluded.notified,
                   updated_ms = excluded.updated_ms",
            )
            .bind(&a.fingerprint)
            .bind(&a.rule)
            .bind(&a.labels)
            .bind(&a.status)
            .bind(a.started_ms)
            .bind(a.resolved_ms)
            .bind(a.seq)
            .bind(&a.notified)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        for n in outbox {
            sqlx::query(
                "INSERT INTO outbox (idempotency_key, contact, fingerprint, notification, status,
                   next_attempt_ms, deadline_ms, created_ms)
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6, $5)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&n.idempotency_key)
            .bind(&n.contact)
            .bind(&n.fingerprint)
            .bind(&n.notification)
            .bind(now_ms)
            .bind(n.deadline_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Pending deliveries for `contact` that are due at `now_ms`, oldest first. A row
    /// waits while an earlier one for the same alert is still pending, so a resolution
    /// never overtakes the firing message it resolves.
    pub async fn due_outbox(
        &self,
        contact: &str,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, contact, fingerprint, notification, attempts, deadline_ms, failures
             FROM outbox_ready WHERE contact = $1 AND next_attempt_ms <= $2
             ORDER BY id LIMIT $3",
        )
        .bind(contact)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| OutboxRow {
                id: r.get(0),
                contact: r.get(1),
                fingerprint: r.get(2),
                notification: r.get(3),
                attempts: r.get(4),
                deadline_ms: r.get(5),
                failures: r.get(6),
            })
            .collect())
    }

    /// The notification of every pending delivery for `contact`, oldest first, whether due
    /// or waiting; for inspection and tests.
    pub async fn pending_notifications(&self, contact: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT notification FROM outbox WHERE contact = $1 AND status = 'pending'
             ORDER BY id",
        )
        .bind(contact)
        .fetch_all(&self.pool)
        .await?)
    }

    /// When the next pending delivery for `contact` that is not waiting behind an earlier
    /// one of its alert falls due, if any.
    pub async fn next_due_ms(&self, contact: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT min(next_attempt_ms) FROM outbox_ready WHERE contact = $1")
                .bind(contact)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Marks a delivery done.
    pub async fn outbox_sent(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET status = 'sent', attempts = attempts + 1, done_ms = $2,
               last_error = NULL
             WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    pub async fn outbox_retry(
        &self,
        id: i64,
        next_attempt_ms: i64,
        error: &str,
        rate_limited: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, failures = failures + $4,
               next_attempt_ms = $2, last_error = $3
             WHERE id = $1",
        )
        .bind(id)
        .bind(next_attempt_ms)
        .bind(error)
        .bind(i64::from(!rate_limited))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives up on a delivery, keeping the reason.
    pub async fn outbox_dead(&self, id: i64, error: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = $2,
               done_ms = $3
             WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Outbox rows by status.
    pub async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let rows = sqlx::query("SELECT status, count(*) FROM outbox GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = OutboxCounts::default();
        for row in rows {
            let n: i64 = row.get(1);
            match row.get::<String, _>(0).as_str() {
                "pending" => counts.pending = n,
                "sent" => counts.sent = n,
                "dead" => counts.dead = n,
                other => return Err(StoreError::Corrupt(format!("outbox status {other:?}"))),
            }
        }
        Ok(counts)
    }

    /// The dead letters with their reasons, newest first.
    pub async fn dead_letters(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT contact, fingerprint, coalesce(last_error, '') FROM outbox
             WHERE status = 'dead' ORDER BY id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// The chat message a contact posted for an alert, if any.
    pub async fn message_ref(
        &self,
        fingerprint: &str,
        contact: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row =
            sqlx::query("SELECT channel, ts FROM messages WHERE fingerprint = $1 AND contact = $2")
                .bind(fingerprint)
                .bind(contact)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Remembers the chat message a contact posted for an alert.
    pub async fn save_message_ref(
        &self,
        fingerprint: &str,
        contact: &str,
        channel: &str,
        ts: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO messages (fingerprint, contact, channel, ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (fingerprint, contact)
               DO UPDATE SET channel = excluded.channel, ts = excluded.ts",
        )
        .bind(fingerprint)
        .bind(contact)
        .bind(channel)
        .bind(ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes what has aged out: journal batches received before `before_ms`, dedup
    /// keys from before `seen_before_s`, and delivered or dead notifications, resolved
    /// alerts and their message references older than `before_ms` (they hold the
    /// providers' events, recipient addresses included). Returns the rows deleted.
    pub async fn prune(&self, before_ms: i64, seen_before_s: i64) -> Result<u64, StoreError> {
        let statements = [
            "DELETE FROM batches WHERE received_ms < $1",
            "DELETE FROM outbox WHERE status != 'pending' AND done_ms < $1",
            "DELETE FROM messages WHERE fingerprint IN
               (SELECT fingerprint FROM alerts WHERE status = 'resolved' AND resolved_ms < $1)",
            "DELETE FROM alerts WHERE status = 'resolved' AND resolved_ms < $1",
        ];
        let mut deleted = 0;
        for sql in statements {
            deleted += sqlx::query(sql)
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        // The log is in arrival order: delete up to the first key young enough.
        deleted += sqlx::query(
            "DELETE FROM seen_log WHERE id < coalesce(
               (SELECT id FROM seen_log WHERE received_s >= $1 ORDER BY id LIMIT 1),
               (SELECT max(id) + 1 FROM seen_log))",
        )
        .bind(seen_before_s)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }
}
