//! SendGrid Event Webhook source: signature check, then batch parsing.

pub mod parse;
pub mod signature;

pub use parse::parse_batch;
pub use signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, VerificationKey};

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
