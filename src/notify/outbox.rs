//! The outbox worker: one task per contact delivering that contact's pending rows in
//! order, with exponential backoff on failures and a pause of the whole contact when
//! the channel answers with a rate limit (Slack's 429 and `Retry-After`).
//!
//! A row past its deadline, or failed for good, becomes a dead letter: kept with its
//! reason, logged at ERROR and counted, never dropped silently.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::Notify;

use super::{Contact, Delivery};
use crate::alerts::Notification;
use crate::clock::Clock;
use crate::store::{OutboxRow, Store};
use crate::templates::Templates;

/// Delay before retry number `attempt` (0-based): 1 s doubling to 5 min, with jitter.
pub fn backoff_delay(attempt: i64) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.clamp(0, 64) as usize)
        .unwrap_or(Duration::from_secs(300))
}

/// Delivers `contact`'s outbox rows until the process stops. `wake` is notified by the
/// alert runner whenever it queues a row for this contact.
pub async fn run(
    store: Store,
    contact: Arc<Contact>,
    templates: Arc<Templates>,
    clock: Clock,
    wake: Arc<Notify>,
) {
    // A rate limit pauses every delivery to this contact, not only the refused one.
    let mut paused_until = i64::MIN;
    loop {
        let now = clock();
        if now < paused_until {
            tokio::time::sleep(Duration::from_millis((paused_until - now) as u64)).await;
            continue;
        }
        let wait_ms = match deliver_due(&store, &contact, &templates, &clock, now).await {
            Ok(Some(until)) => {
                paused_until = until;
                continue;
            }
            Ok(None) => match store.next_due_ms(&contact.name).await {
                Ok(Some(next)) => next - clock(),
                Ok(None) => 60_000,
                Err(error) => {
                    tracing::error!(
                        error = %error,
                        contact = %contact.name,
                        "reading the outbox failed",
                    );
                    1_000
                }
            },
            Err(error) => {
                tracing::error!(
                    error = %error,
                    contact = %contact.name,
                    "reading the outbox failed",
                );
                1_000
            }
        };
        if wait_ms > 0 {
            let _ = tokio::time::timeout(
                Duration::from_millis(wait_ms.min(60_000) as u64),
                wake.notified(),
            )
            .await;
        }
    }
}

/// Delivers every due row; returns `Some(until)` when the contact is paused by a rate limit.
async fn deliver_due(
    store: &Store,
    contact: &Contact,
    templates: &Arc<Templates>,
    clock: &Clock,
    now: i64,
) -> Result<Option<i64>, crate::store::StoreError> {
    for row in store.due_outbox(&contact.name, now, 64).await? {
        if let Some(paused_until) = deliver_row(store, contact, templates, clock, row).await? {
            return Ok(Some(paused_until));
        }
    }
    Ok(None)
}

async fn deliver_row(
    store: &Store,
    contact: &Contact,
    templates: &Arc<Templates>,
    clock: &Clock,
    row: OutboxRow,
) -> Result<Option<i64>, crate::store::StoreError> {
    let notification: Notification = match serde_json::from_str(&row.notification) {
        Ok(n) => n,
        Err(error) => {
            let reason = format!("stored notification unreadable: {error}");
            dead_letter(store, &contact.name, &row, None, &reason, clock()).await?;
            return Ok(None);
        }
    };
    let outcome = contact.deliver(store, templates, &notification).await;
    let now = clock();
    let name = contact.name.as_str();
    match outcome {
        Delivery::Sent => {
            store.outbox_sent(row.id, now).await?;
            metrics::counter!(
                "backchannel_notifications_sent_total",
                "contact" => name.to_string())
            .increment(1);
            Ok(None)
        }
        Delivery::Retry { after, error } => {
            let rate_limited = after.is_some();
            let delay = after.unwrap_or_else(|| backoff_delay(row.failures));
            let retry_at = now + delay.as_millis() as i64;
            if retry_at > row.deadline_ms {
                let reason = format!("gave up after {} attempts: {error}", row.attempts + 1);
                dead_letter(store, name, &row, Some(&notification), &reason, now).await?;
                return Ok(None);
            }
            tracing::warn!(
                contact = name,
                error = %error,
                retry_in_ms = delay.as_millis() as u64,
                attempt = row.attempts + 1,
                "delivery will be retried",
            );
            store
                .outbox_retry(row.id, retry_at, &error, rate_limited)
                .await?;
            metrics::counter!(
                "backchannel_notifications_retried_total",
                "contact" => name.to_string())
            .increment(1);
            Ok(rate_limited.then_some(retry_at))
        }
        Delivery::Failed(error) => {
            dead_letter(store, name, &row, Some(&notification), &error, now).await?;
            Ok(None)
        }
    }
}

async fn dead_letter(
    store: &Store,
    contact: &str,
    row: &OutboxRow,
    notification: Option<&Notification>,
    reason: &str,
    now: i64,
) -> Result<(), crate::store::StoreError> {
    tracing::error!(
        contact,
        fingerprint = %row.fingerprint,
        rule = notification.map(|n| n.rule.as_str()).unwrap_or("?"),
        summary = notification.map(|n| n.summary.as_str()).unwrap_or("?"),
        error = %reason,
        "notification is a dead letter"
    );
    metrics::counter!("backchannel_notifications_dead_total", "contact" => contact.to_string())
        .increment(1);
    store.outbox_dead(row.id, reason, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let first = backoff_delay(0);
        assert!(
            first >= Duration::from_secs(1) && first < Duration::from_secs(3),
            "{first:?}"
        );
        let late = backoff_delay(40);
        assert!(late <= Duration::from_secs(600), "{late:?}");
        assert!(backoff_delay(4) >= Duration::from_secs(16));
    }
}
