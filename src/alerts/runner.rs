//! The evaluator task of `serve`: feeds durable events to the rule engine, checks groups
//! on every batch and every tick, and persists alert changes with their outbox rows.
//!
//! It is the only writer of alert state. At start-up it rebuilds the rule windows from
//! the journal, so a restart (even `kill -9`) neither loses counted events nor re-sends
//! a notification that was already decided: those are in the alert state it restores.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::{AlertBook, Change};
use crate::clock::Clock;
use crate::rules::Engine;
use crate::sources::Source;
use crate::store::journal::DurableEvents;
use crate::store::{OutboxInsert, Store, StoreError};

/// Request bodies read back at a time while rebuilding the windows: a page stops here, so
/// a journal of large batches is not loaded hundreds at once.
const REBUILD_PAGE_BYTES: i64 = 32 * 1024 * 1024;

/// The evaluator's state; owned by its task.
pub struct Runner {
    pub engine: Engine,
    pub book: AlertBook,
    pub store: Store,
    pub clock: Clock,
    /// Per contact, how long a notification may take to deliver before it is dead.
    pub deadlines_ms: HashMap<String, i64>,
    /// Per contact, the outbox worker to wake when a notification is queued for it.
    pub wakers: HashMap<String, Arc<Notify>>,
    /// Resolved alerts older than this are forgotten (the store prunes them too).
    pub retention_ms: i64,
    /// The clock reading of the last check of every group whose decisions are saved;
    /// read by tests and exported as a metric, so a stuck evaluator shows.
    pub checked_all_at_ms: Arc<AtomicI64>,
}

impl Runner {
    /// Restores alert state and refills the windows from the journal batches, up to id
    /// `up_to_batch`, within the longest lookback, then evaluates once. Returns the
    /// number of events replayed.
    pub async fn rebuild(
        &mut self,
        sources: &HashMap<String, Source>,
        up_to_batch: i64,
    ) -> Result<usize, StoreError> {
        self.book
            .restore(self.store.load_alerts().await?)
            .map_err(StoreError::Corrupt)?;
        let now = (self.clock)();
        // FIXME: this re-reads every batch within the longest lookback, so start-up
        // time grows with traffic; periodic snapshots of the window state plus the
        // journal tail after them would bound it.
        let since = now - self.engine.lookback_ms();
        let mut after_id = 0;
        let mut replayed = 0;
        loop {
            let batches = self
                .store
                .batches_since(since, after_id, 256, REBUILD_PAGE_BYTES)
                .await?;
            let Some(last) = batches.last() else { break };
            after_id = last.id;
            // Later batches were accepted while this ran; they reach the engine through
            // the journal's channel instead.
            for batch in batches.into_iter().filter(|b| b.id <= up_to_batch) {
                let Some(source) = sources.get(&batch.source) else {
                    tracing::debug!(
                        source = %batch.source,
                        "journal batch of a source no longer configured skipped",
                    );
                    continue;
                };
                let parsed = match source.parse(&batch.body, batch.received_ms) {
                    Ok(parsed) => parsed,
                    Err(error) => {
                        tracing::warn!(
                            error = %error,
                            batch = batch.id,
                            "journal batch no longer parses; skipped",
                        );
                        continue;
                    }
                };
                for event in parsed.events {
                    let accepted = batch
                        .accepted
                        .as_ref()
                        .is_none_or(|a| a.contains(&event.position));
                    if accepted {
                        self.engine.observe(event.event, batch.received_ms);
                        replayed += 1;
                    }
                }
            }
            if after_id >= up_to_batch {
                break;
            }
        }
        let outcomes = self
            .engine
            .evaluate(now, false, |fp| self.book.is_firing_id(fp));
        let changes = self.book.apply(outcomes, now);
        self.persist(changes, now).await?;
        Ok(replayed)
    }

    /// Runs until the event channel closes.
    pub async fn run(mut self, mut events: mpsc::Receiver<DurableEvents>, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Events first: a tick must not judge a window before the events that
            // arrived for it are counted.
            let only_dirty = tokio::select! {
                biased;
                received = events.recv() => {
                    let Some(first) = received else { break };
                    self.observe(first);
                    // Take what else is waiting, so one check covers many batches.
                    for _ in 0..64 {
                        match events.try_recv() {
                            Ok(more) => self.observe(more),
                            Err(_) => break,
                        }
                    }
                    true
                }
                _ = ticker.tick() => false,
            };
            let now = (self.clock)();
            if !only_dirty {
                self.book.forget_resolved_before(now - self.retention_ms);
            }
            let outcomes = self
                .engine
                .evaluate(now, only_dirty, |fp| self.book.is_firing_id(fp));
            if !outcomes.is_empty() {
                let changes = self.book.apply(outcomes, now);
                let mut attempt = 0;
                while let Err(error) = self.persist(changes.clone(), now).await {
                    attempt += 1;
                    tracing::error!(
                        error = %error,
                        attempt,
                        "saving alert changes failed; retrying",
                    );
                    tokio::time::sleep(Duration::from_millis(200 * attempt.min(50))).await;
                }
            }
            if !only_dirty {
                self.checked_all_at_ms.store(now, Ordering::SeqCst);
                metrics::gauge!("backchannel_rules_checked_timestamp_seconds")
                    .set(now as f64 / 1000.0);
            }
            metrics::gauge!("backchannel_alerts_firing").set(self.book.firing_count() as f64);
            metrics::gauge!("backchannel_rule_groups").set(self.engine.group_count() as f64);
        }
    }

    fn observe(&mut self, durable: DurableEvents) {
        for event in durable.events {
            self.engine.observe(event, durable.received_ms);
        }
    }

    async fn persist(&self, changes: Vec<Change>, now_ms: i64) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(changes.len());
        let mut outbox = Vec::new();
        for change in changes {
            for notification in &change.notifications {
                let body = serde_json::to_string(notification).expect("notifications serialise");
                for contact in &notification.contacts {
                    let deadline = self
                        .deadlines_ms
                        .get(contact)
                        .copied()
                        .unwrap_or(6 * 3_600_000);
                    outbox.push(OutboxInsert {
                        idempotency_key: notification.idempotency_key(contact),
                        contact: contact.clone(),
                        fingerprint: notification.fingerprint.clone(),
                        notification: body.clone(),
                        deadline_ms: now_ms + deadline,
                    });
                }
            }
            rows.push(change.row);
        }
        self.store
            .apply_alert_changes(&rows, &outbox, now_ms)
            .await?;
        for insert in &outbox {
            if let Some(waker) = self.wakers.get(&insert.contact) {
                waker.notify_one();
            }
        }
        Ok(())
    }
}
