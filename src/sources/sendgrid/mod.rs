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

    /// SendGrid puts a send's `custom_args` (and legacy unique args) beside its own
    /// fields, so they are the top-level fields SendGrid does not document; a nested
    /// `custom_args` object, as some relays send, is taken as it is.
    fn passthrough(
        &self,
        event: &crate::event::Event,
    ) -> serde_json::Map<String, serde_json::Value> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(&event.raw) else {
            return serde_json::Map::new();
        };
        let mut out = serde_json::Map::new();
        for (name, value) in fields {
            if name == "custom_args"
                && let serde_json::Value::Object(args) = value
            {
                out.extend(args);
            } else if !DOCUMENTED_FIELDS.contains(&name.as_str()) {
                out.insert(name, value);
            }
        }
        out
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

/// Fields SendGrid itself sets on events; everything else came from the sender.
const DOCUMENTED_FIELDS: &[&str] = &[
    "email",
    "timestamp",
    "event",
    "sg_event_id",
    "sg_message_id",
    "sg_template_id",
    "sg_template_name",
    "sg_machine_open",
    "sg_content_type",
    "smtp-id",
    "category",
    "reason",
    "status",
    "response",
    "attempt",
    "type",
    "bounce_classification",
    "useragent",
    "ip",
    "url",
    "url_offset",
    "asm_group_id",
    "tls",
    "cert_err",
    "pool",
    "send_at",
    "marketing_campaign_id",
    "marketing_campaign_name",
    "marketing_campaign_version",
    "marketing_campaign_split_id",
    "mc_stats",
    "phase_id",
    "post_type",
    "singlesend_id",
    "singlesend_name",
    "template_id",
    "template_version_id",
    "newsletter",
    "nlvx_campaign_id",
    "nlvx_user_id",
    "type_id",
    "account_status",
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
