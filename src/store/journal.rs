//! The journal: accepted request bodies and dedup keys, written with group commits.
//!
//! One writer task owns the dedup index. Ingest handlers hand it parsed batches through
//! a bounded queue; it takes every batch waiting (up to a limit), decides which events
//! are new against the index, writes the batches and the new keys in one transaction
//! (one fsync), and only then answers each handler, adds the keys to the index and
//! passes the new events on to the rule engine. A full queue is refused at once so the
//! handler can answer 503: the journal never buffers without bound.
//!
//! The index lives in memory (about 40 bytes per key within the dedup horizon) and is
//! loaded from the key log at start-up: random lookups in memory, sequential appends on
//! disk, where a B-tree of random keys made every commit rewrite pages all over it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};
use crate::event::Event;
use crate::sources::ParsedEvent;

/// Events the journal has made durable and found new, in arrival order.
#[derive(Debug)]
pub struct DurableEvents {
    pub received_ms: i64,
    pub events: Vec<Event>,
}

/// What happened to a submitted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub new: usize,
    pub duplicates: usize,
}

struct Job {
    source: Arc<str>,
    received_ms: i64,
    body: Bytes,
    events: Vec<ParsedEvent>,
    reply: oneshot::Sender<Result<Accepted, String>>,
}

/// The queue was full: the caller should answer 503 with `Retry-After`.
#[derive(Debug, thiserror::Error)]
#[error("journal queue is full")]
pub struct QueueFull;

/// Handle used by ingest handlers; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    /// Held by every ingest handler; the writer task holds the receiving end and stops
    /// when the last handle is dropped.
    queue: mpsc::Sender<Job>,
}

impl Journal {
    /// Starts the writer task. New events go to `engine`; the writer waits when the engine
    /// is behind, which fills the queue, which makes ingest answer 503.
    pub fn start(
        store: Store,
        index: SeenIndex,
        queue_batches: usize,
        max_group_events: usize,
        engine: mpsc::Sender<DurableEvents>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, jobs) = mpsc::channel(queue_batches.max(1));
        let task = tokio::spawn(writer(store, index, jobs, max_group_events.max(1), engine));
        (Self { queue }, task)
    }

    /// Queues a parsed batch; the receiver answers once it is durable.
    pub fn submit(
        &self,
        source: Arc<str>,
        received_ms: i64,
        body: Bytes,
        events: Vec<ParsedEvent>,
    ) -> Result<oneshot::Receiver<Result<Accepted, String>>, QueueFull> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job {
                source,
                received_ms,
                body,
                events,
                reply,
            })
            .map_err(|_| QueueFull)?;
        Ok(answer)
    }
}

/// Dedup keys are already uniform 64-bit hashes: hashing them again only costs time.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_i64(&mut self, key: i64) {
        self.0 = key as u64;
    }
}

type KeyMap<V> = HashMap<i64, V, std::hash::BuildHasherDefault<KeyHasher>>;
type KeySet = HashSet<i64, std::hash::BuildHasherDefault<KeyHasher>>;

/// Every dedup key seen within the horizon, with when it arrived (seconds).
#[derive(Debug, Default)]
pub struct SeenIndex {
    keys: KeyMap<i64>,
    horizon_s: i64,
    last_pruned_s: i64,
}

impl SeenIndex {
    /// Loads the keys received at or after `now_s - horizon_s` from the key log.
    pub async fn load(store: &Store, now_s: i64, horizon_s: i64) -> Result<Self, StoreError> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT key, received_s FROM seen_log WHERE received_s >= $1")
                .bind(now_s - horizon_s)
                .fetch_all(store.pool())
                .await?;
        Ok(Self {
            keys: rows.into_iter().collect(),
            horizon_s,
            last_pruned_s: now_s,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Forgets keys older than the horizon, at most once a minute.
    fn prune(&mut self, now_s: i64) {
        if now_s - self.last_pruned_s >= 60 {
            let cutoff = now_s - self.horizon_s;
            self.keys.retain(|_, received| *received >= cutoff);
            self.last_pruned_s = now_s;
        }
    }
}

async fn writer(
    store: Store,
    mut index: SeenIndex,
    mut jobs: mpsc::Receiver<Job>,
    max_group_events: usize,
    engine: mpsc::Sender<DurableEvents>,
) {
    let mut group: Vec<Job> = Vec::new();
    while let Some(first) = jobs.recv().await {
        let mut events = first.events.len();
        group.push(first);
        while events < max_group_events {
            match jobs.try_recv() {
                Ok(job) => {
                    events += job.events.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }

        match write_group(&store, &index, &group).await {
            Ok(accepted) => {
                for (job, is_new) in group.iter().zip(&accepted) {
                    let received_s = job.received_ms / 1000;
                    for (event, _) in job.events.iter().zip(is_new).filter(|(_, new)| **new) {
                        index
                            .keys
                            .extend(event.keys.iter().map(|k| (*k, received_s)));
                    }
                }
                if let Some(last) = group.last() {
                    index.prune(last.received_ms / 1000);
                }
                for (job, accepted_positions) in group.drain(..).zip(accepted) {
                    let total = job.events.len();
                    let new_events: Vec<Event> = job
                        .events
                        .into_iter()
                        .zip(&accepted_positions)
                        .filter(|(_, is_new)| **is_new)
                        .map(|(parsed, _)| parsed.event)
                        .collect();
                    let answer = Accepted {
                        new: new_events.len(),
                        duplicates: total - new_events.len(),
                    };
                    if !new_events.is_empty() {
                        let durable = DurableEvents {
                            received_ms: job.received_ms,
                            events: new_events,
                        };
                        if engine.send(durable).await.is_err() {
                            tracing::error!(
                                "rule engine stopped; durable events are evaluated after restart"
                            );
                        }
                    }
                    let _ = job.reply.send(Ok(answer));
                }
            }
            Err(error) => {
                tracing::error!(
                    error = %error,
                    batches = group.len(),
                    "journal commit failed; batches refused",
                );
                for job in group.drain(..) {
                    let _ = job.reply.send(Err("journal is unavailable".to_string()));
                }
            }
        }
    }
}

/// Writes every job of the group in one transaction; returns, per job, which of its
/// events were new. The index is not changed here: the keys count as seen only once the
/// transaction has committed.
async fn write_group(
    store: &Store,
    index: &SeenIndex,
    group: &[Job],
) -> Result<Vec<Vec<bool>>, StoreError> {
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let mut result = Vec::with_capacity(group.len());
    // Keys of earlier events in this group, so a duplicate within the group counts once.
    let mut claimed = KeySet::default();
    for job in group {
        let is_new: Vec<bool> = job
            .events
            .iter()
            .map(|e| {
                let new = e
                    .keys
                    .iter()
                    .all(|k| !index.keys.contains_key(k) && !claimed.contains(k));
                claimed.extend(e.keys.iter().copied());
                new
            })
            .collect();
        let new_keys: Vec<i64> = job
            .events
            .iter()
            .zip(&is_new)
            .filter(|(_, new)| **new)
            .flat_map(|(e, _)| e.keys.iter().copied())
            .collect();
        if !new_keys.is_empty() {
            let json = serde_json::to_string(&new_keys).expect("integers serialise");
            sqlx::query(
                "INSERT INTO seen_log (key, received_s) SELECT value, $2 FROM json_each($1)",
            )
            .bind(json)
            .bind(job.received_ms / 1000)
            .execute(&mut *tx)
            .await?;
        }

        let positions: Vec<u32> = job
            .events
            .iter()
            .zip(&is_new)
            .filter(|(_, new)| **new)
            .map(|(e, _)| e.position)
            .collect();
        if !positions.is_empty() {
            let accepted: Option<Vec<u8>> = (positions.len() != job.events.len())
                .then(|| positions.iter().flat_map(|p| p.to_le_bytes()).collect());
            sqlx::query(
                "INSERT INTO batches (source, received_ms, body, accepted) VALUES ($1, $2, $3, $4)",
            )
            .bind(&*job.source)
            .bind(job.received_ms)
            .bind(&job.body[..])
            .bind(accepted)
            .execute(&mut *tx)
            .await?;
        }
        result.push(is_new);
    }
    tx.commit().await?;
    Ok(result)
}

/// One journal row read back: the source, when it arrived, the body, and the positions
/// of its new events (`None`: every event that parses).
#[derive(Debug)]
pub struct StoredBatch {
    pub id: i64,
    pub source: String,
    pub received_ms: i64,
    pub body: Vec<u8>,
    pub accepted: Option<Vec<u32>>,
}

fn stored_batch(r: sqlx::sqlite::SqliteRow) -> Result<StoredBatch, StoreError> {
    let accepted: Option<Vec<u8>> = r.get(4);
    let accepted = match accepted {
        None => None,
        Some(bytes) if bytes.len() % 4 == 0 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Some(_) => return Err(StoreError::Corrupt("batch accepted positions".into())),
    };
    Ok(StoredBatch {
        id: r.get(0),
        source: r.get(1),
        received_ms: r.get(2),
        body: r.get(3),
        accepted,
    })
}

impl Store {
    /// Journal batches with id above `after_id` received at or after `since_ms`, in
    /// arrival order: at most `limit` of them, and no more than fit in `max_bytes` of
    /// bodies (but always one, however large), so that reading the journal back holds a
    /// bounded amount in memory whatever the batch sizes.
    pub async fn batches_since(
        &self,
        since_ms: i64,
        after_id: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Vec<StoredBatch>, StoreError> {
        // length() of a blob is read from its record header, without loading the body.
        let sizes: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, length(body) FROM batches
             WHERE id > $1 AND received_ms >= $2 ORDER BY id LIMIT $3",
        )
        .bind(after_id)
        .bind(since_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut total = 0;
        let mut last_id = None;
        for (id, size) in sizes {
            if last_id.is_some() && total + size > max_bytes {
                break;
            }
            total += size;
            last_id = Some(id);
        }
        let Some(last_id) = last_id else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT id, source, received_ms, body, accepted FROM batches
             WHERE id > $1 AND id <= $2 AND received_ms >= $3 ORDER BY id",
        )
        .bind(after_id)
        .bind(last_id)
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(stored_batch).collect()
    }

    /// Journal batches with id below `before_id`, newest first, optionally of one source:
    /// at most `limit`, and no more than `max_bytes` of bodies (but always one).
    pub async fn batches_before(
        &self,
        before_id: i64,
        source: Option<&str>,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Vec<StoredBatch>, StoreError> {
        let sizes: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, length(body) FROM batches
             WHERE id < $1 AND ($2 IS NULL OR source = $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(before_id)
        .bind(source)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut total = 0;
        let mut ids = Vec::new();
        for (id, size) in sizes {
            if !ids.is_empty() && total + size > max_bytes {
                break;
            }
            total += size;
            ids.push(id);
        }
        let mut batches = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(
                "SELECT id, source, received_ms, body, accepted FROM batches WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
            // Pruned between the two queries: nothing to show.
            let Some(row) = row else { continue };
            batches.push(stored_batch(row)?);
        }
        Ok(batches)
    }

    /// The id of the newest journal batch (0 when there is none).
    pub async fn last_batch_id(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM batches")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Number of dedup keys in the key log; for tests.
    pub async fn seen_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM seen_log")
            .fetch_one(self.pool())
            .await?)
    }
}
