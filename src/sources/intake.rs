//! The way in for a source's own background task (a mailbox poller, say): a body it
//! fetched goes through the same parse and the same journal as a body posted to
//! `POST /ingest/{source}`, with the same dedup and the same answer, so a report counts
//! once whichever way it arrived.
//!
//! The HTTP handler keeps its own copy of these steps because it also answers with
//! status codes and `Retry-After`; the two must agree on what is accepted.

use std::sync::Arc;

use bytes::Bytes;

use super::{Source, SourceError};
use crate::clock::Clock;
use crate::store::journal::Journal;

/// Submits bodies for one source; cheap to clone.
#[derive(Clone)]
pub struct Intake {
    source: Source,
    journal: Journal,
    clock: Clock,
}

/// What became of a submitted body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub received: usize,
    pub accepted: usize,
    pub duplicates: usize,
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
}

/// Why a body was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// The source refused it; sending it again changes nothing.
    #[error("{0}")]
    Refused(SourceError),
    /// The journal could not take it now; it may be sent again later.
    #[error("{0}")]
    Unavailable(&'static str),
}

impl Intake {
    pub fn new(source: Source, journal: Journal, clock: Clock) -> Self {
        Self {
            source,
            journal,
            clock,
        }
    }

    pub fn source_id(&self) -> &Arc<str> {
        &self.source.id
    }

    /// Parses `body` as this source's payload and journals its events; answers once
    /// they are durable.
    pub async fn submit(&self, body: Bytes) -> Result<Answer, IntakeError> {
        let id = self.source.id.to_string();
        let now_ms = (self.clock)();
        // A report may decompress to 50 MiB of XML: read it off the async workers.
        let source = self.source.clone();
        let bytes = body.clone();
        let parsed = tokio::task::spawn_blocking(move || source.parse(&bytes, now_ms))
            .await
            .unwrap_or_else(|_| {
                Err(SourceError::BadRequest(
                    "the body could not be parsed".into(),
                ))
            });
        let parsed = parsed.map_err(|error| {
            metrics::counter!(
                "backchannel_requests_rejected_total",
                "source" => id.clone(),
                "reason" => error.reason())
            .increment(1);
            IntakeError::Refused(error)
        })?;
        let skipped = parsed.skipped.len();
        if skipped > 0 {
            metrics::counter!("backchannel_events_skipped_total", "source" => id.clone())
                .increment(skipped as u64);
            if parsed.events.is_empty() {
                return Err(IntakeError::Refused(SourceError::BadRequest(format!(
                    "no event in the batch is valid; first problem: {}",
                    parsed.skipped[0]
                ))));
            }
        }
        let received = parsed.events.len() + skipped;
        let answer = self
            .journal
            .submit(self.source.id.clone(), now_ms, body, parsed.events)
            .map_err(|_| IntakeError::Unavailable("journal is behind"))?;
        let accepted = match answer.await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(_)) | Err(_) => return Err(IntakeError::Unavailable("journal is unavailable")),
        };
        metrics::counter!("backchannel_events_accepted_total", "source" => id.clone())
            .increment(accepted.new as u64);
        metrics::counter!("backchannel_events_duplicate_total", "source" => id)
            .increment(accepted.duplicates as u64);
        Ok(Answer {
            received,
            accepted: accepted.new,
            duplicates: accepted.duplicates,
            skipped: parsed.skipped,
            warnings: parsed.warnings,
        })
    }
}
