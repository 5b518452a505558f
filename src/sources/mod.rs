//! Sources: where a provider's request enters and becomes common events.
//!
//! A source verifies a request over its raw bytes, then parses the same bytes into
//! events with dedup keys. It does not store anything or decide whether an event is new:
//! the journal (`store::journal`) does that durably. The same parser runs again when the
//! journal is read back after a restart, so parsing must be deterministic.

pub mod loose;
pub mod sendgrid;

use std::sync::Arc;

use axum::http::HeaderMap;

use crate::event::Event;

/// The key under which an event counts as already seen within the dedup horizon;
/// `None` for an event that is never a duplicate.
pub type DedupKeys = Option<i64>;

/// One event of a batch, with its position in the provider's array.
#[derive(Debug, Clone)]
pub struct ParsedEvent {
    pub position: u32,
    pub event: Event,
    pub keys: DedupKeys,
}

/// What a request body held: the events that parsed, and why the others did not.
#[derive(Debug, Default)]
pub struct ParsedBatch {
    pub events: Vec<ParsedEvent>,
    pub skipped: Vec<String>,
}

/// A request a source refuses as a whole. Messages are returned to the client, so they
/// never contain a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadRequest(String),
}

impl SourceError {
    /// Short machine-readable reason for the rejection counter.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Unauthorized(_) => "unauthorized",
            SourceError::BadRequest(_) => "bad_request",
        }
    }
}

/// The kind-specific part of a configured source.
#[derive(Debug, Clone)]
pub enum SourceKind {
    SendGrid {
        /// `None` accepts unsigned batches (a warning says so at start-up).
        verification_key: Option<sendgrid::VerificationKey>,
        max_skew_secs: i64,
    },
}

/// A configured source, ready to verify and parse requests.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: Arc<str>,
    pub kind: SourceKind,
}

impl Source {
    /// Checks the request's credentials over the raw body. Runs before any parsing.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), SourceError> {
        match &self.kind {
            SourceKind::SendGrid {
                verification_key: None,
                ..
            } => Ok(()),
            SourceKind::SendGrid {
                verification_key: Some(key),
                max_skew_secs,
            } => key
                .verify(
                    headers
                        .get(sendgrid::SIGNATURE_HEADER)
                        .map(|v| v.as_bytes()),
                    headers
                        .get(sendgrid::TIMESTAMP_HEADER)
                        .map(|v| v.as_bytes()),
                    body,
                    now_secs,
                    *max_skew_secs,
                )
                .map_err(|e| SourceError::Unauthorized(format!("source {:?}: {e}", &*self.id))),
        }
    }

    /// Parses a verified body. `received_ms` stands in for missing event times.
    pub fn parse(&self, body: &[u8], received_ms: i64) -> Result<ParsedBatch, SourceError> {
        match &self.kind {
            SourceKind::SendGrid { .. } => sendgrid::parse_batch(&self.id, body, received_ms),
        }
    }

    /// Whether requests to this source are checked for a signature.
    pub fn is_verified(&self) -> bool {
        match &self.kind {
            SourceKind::SendGrid {
                verification_key, ..
            } => verification_key.is_some(),
        }
    }
}

/// A stable 64-bit key over `parts`, scoped to the source. Stable across processes and
/// versions, since keys are stored.
pub fn dedup_key(source: &str, parts: &[&str]) -> i64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(source.as_bytes());
    for part in parts {
        hasher.update(&[0xff]);
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.digest() as i64
}
