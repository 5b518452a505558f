//! SendGrid Event Webhook source: signature check, then batch parsing.

pub mod parse;
pub mod signature;

pub use parse::parse_batch;
pub use signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, VerificationKey};
