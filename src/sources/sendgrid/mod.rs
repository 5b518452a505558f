//! SendGrid Event Webhook source: signature check, then batch parsing.

pub mod parse;
pub mod signature;

use std::sync::Arc;

use serde::Deserialize;

pub use parse::parse_batch;
pub use signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, VerificationKey};

use super::{Backchannel, ParsedBatch, Pending, Request, SourceError, Vocabulary};
use crate::config::SourceSettings;

/// A configured SendGrid Event Webhook.
#[derive(Debug, Clone)]
pub struct SendGrid {
    /// `None` accepts unsigned batches (a warning says so at start-up).
    pub verification_key: Option<VerificationKey>,
    pub max_skew_secs: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The Signed Event Webhook verification key as SendGrid shows it (base64).
    verification_key: Option<String>,
    /// Largest accepted distance between the signature timestamp and now.
    max_timestamp_skew: Option<String>,
}

pub fn configure(settings: &mut SourceSettings<'_>) -> Option<Arc<dyn Backchannel>> {
    let raw: Settings = settings.parse()?;
    let verification_key = match settings.secret("verification_key", raw.verification_key) {
        None => {
            settings.warn("no verification_key, so unsigned batches are accepted");
            None
        }
        Some(text) => match VerificationKey::from_base64(text.trim()) {
            Ok(key) => Some(key),
            Err(e) => {
                settings.error(
                    "verification_key",
                    format!("expected the base64 public key SendGrid shows, but it is {e}"),
                );
                None
            }
        },
    };
    let max_skew_secs = settings.duration(
        "max_timestamp_skew",
        raw.max_timestamp_skew.as_deref(),
        600_000,
    ) / 1000;
    Some(Arc::new(SendGrid {
        verification_key,
        max_skew_secs,
    }))
}

impl Backchannel for SendGrid {
    fn verify<'a>(
        &'a self,
        source: &'a str,
        request: Request<'a>,
    ) -> Pending<'a, Result<(), SourceError>> {
        let result = match &self.verification_key {
            None => Ok(()),
            Some(key) => key
                .verify(
                    request.headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()),
                    request.headers.get(TIMESTAMP_HEADER).map(|v| v.as_bytes()),
                    request.body,
                    request.now_ms.div_euclid(1000),
                    self.max_skew_secs,
                )
                .map_err(|e| SourceError::Unauthorized(format!("source {source:?}: {e}"))),
        };
        Box::pin(std::future::ready(result))
    }

    fn parse(
        &self,
        source: &Arc<str>,
        body: &[u8],
        received_ms: i64,
    ) -> Result<ParsedBatch, SourceError> {
        parse_batch(source, body, received_ms)
    }

    fn is_verified(&self) -> bool {
        self.verification_key.is_some()
    }
}
/// What `check` knows of SendGrid's events.
pub const VOCABULARY: Vocabulary = Vocabulary {
    provider: "SendGrid",
    prefix: "sendgrid.",
    kinds: KNOWN_KINDS,
    labels: LABELS,
};

/// Event kinds SendGrid documents; others are kept too, but a rule naming one that is
/// not here is probably a typo, so `check` warns.
pub const KNOWN_KINDS: &[&str] = &[
    "sendgrid.processed",
    "sendgrid.dropped",
    "sendgrid.deferred",
    "sendgrid.delivered",
    "sendgrid.bounce",
    "sendgrid.open",
    "sendgrid.click",
    "sendgrid.spamreport",
    "sendgrid.unsubscribe",
    "sendgrid.group_unsubscribe",
    "sendgrid.group_resubscribe",
    "sendgrid.account_status_change",
];

/// Labels SendGrid events carry.
pub const LABELS: &[&str] = &[
    "asm_group_id",
    "bounce_type",
    "category",
    "classification",
    "domain",
    "event",
    "pool",
    "reason",
    "source",
];
