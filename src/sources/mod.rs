//! Sources: where a provider's request enters and becomes common events.
//!
//! A source verifies a request over its raw bytes, then parses the same bytes into
//! events with dedup keys. It does not store anything or decide whether an event is new:
//! the journal (`store::journal`) does that durably. The same parser runs again when the
//! journal is read back after a restart, so parsing must be deterministic and must not
//! depend on anything but the stored body and the time it arrived.
//!
//! Each provider lives in its own module and implements [`Backchannel`]; [`configure`]
//! is the one place that maps a config `type` to a module.

pub mod alertmanager;
pub mod auth;
pub mod aws;
pub mod csp;
pub mod dmarc;
pub mod intake;
pub mod loose;
pub mod mapping;
pub mod sendgrid;
pub mod webhook;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::HeaderMap;

use crate::config::SourceSettings;
use crate::event::Event;

/// The key under which an event counts as already seen within the dedup horizon;
/// `None` for an event that is never a duplicate.
pub type DedupKeys = Option<i64>;

/// One event of a batch, with its position in the provider's payload.
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
    /// Things that were accepted but are worth telling the sender (a DMARC report whose
    /// date range is longer than a day, say).
    pub warnings: Vec<String>,
}

/// A request a source refuses as a whole. Messages are returned to the client, so they
/// never contain a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    /// 401: missing or wrong credentials or signature.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: credentials are fine but the sender is not allowed (an origin or topic not
    /// on the source's allow-list).
    #[error("{0}")]
    Forbidden(String),
    /// 400: the body cannot be read as this source's payload.
    #[error("{0}")]
    BadRequest(String),
    /// 413: larger than the source allows, before or after decompression.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a content type this source never receives.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: the client sends faster than the source allows.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// 502: something the source needed from elsewhere (a signing certificate, a
    /// subscription confirmation) failed; the provider should retry.
    #[error("{0}")]
    Upstream(String),
}

impl SourceError {
    /// Short machine-readable reason for the rejection counter.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Unauthorized(_) => "unauthorized",
            SourceError::Forbidden(_) => "forbidden",
            SourceError::BadRequest(_) => "bad_request",
            SourceError::TooLarge(_) => "too_large",
            SourceError::UnsupportedMediaType(_) => "media_type",
            SourceError::RateLimited { .. } => "rate_limited",
            SourceError::Upstream(_) => "upstream",
        }
    }
}

/// What a source sees of a request before it parses the body.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub now_ms: i64,
    /// The connecting client's address, when the server knows it.
    pub peer: Option<IpAddr>,
}

impl Request<'_> {
    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The media type of `Content-Type`, lowercased and without parameters.
    pub fn media_type(&self) -> Option<String> {
        let value = self.header("content-type")?;
        let media = value.split(';').next().unwrap_or("").trim();
        (!media.is_empty()).then(|| media.to_ascii_lowercase())
    }
}

/// A boxed future, for the one asynchronous step of a source.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The kinds and labels a source's events can have, for `check`'s warnings about rules
/// that could never match.
#[derive(Debug, Clone, Copy)]
pub struct Vocabulary {
    /// Provider name for messages: "SendGrid".
    pub provider: &'static str,
    /// Kind prefix every event of the source has: "sendgrid.".
    pub prefix: &'static str,
    pub kinds: &'static [&'static str],
    pub labels: &'static [&'static str],
}

/// One provider's way in.
pub trait Backchannel: Send + Sync + fmt::Debug {
    /// Checks credentials (and does whatever the protocol asks before the body is
    /// trusted, such as fetching a signing certificate) over the raw request.
    fn verify<'a>(
        &'a self,
        source: &'a str,
        request: Request<'a>,
    ) -> Pending<'a, Result<(), SourceError>>;

    /// Parses a verified body. `received_ms` stands in for missing event times.
    fn parse(
        &self,
        source: &Arc<str>,
        body: &[u8],
        received_ms: i64,
    ) -> Result<ParsedBatch, SourceError>;

    /// Whether requests are checked for a signature or secret.
    fn is_verified(&self) -> bool;

    /// The fields the sender attached to link back to what caused the event (SendGrid
    /// `custom_args`, a generic event's `passthrough`), read from the event's raw JSON
    /// for the events API. The `traceparent` is added by the caller.
    fn passthrough(&self, event: &Event) -> serde_json::Map<String, serde_json::Value> {
        let _ = event;
        serde_json::Map::new()
    }

    /// Replaces dedup keys with ones from the request's headers, for providers that
    /// name a delivery there rather than in the body (Standard Webhooks' `webhook-id`).
    /// Only ingest reads keys: a restart and the events API go by the positions the
    /// journal stored as new, so keys may depend on more than the body.
    fn request_keys(&self, source: &str, request: &Request<'_>, batch: &mut ParsedBatch) {
        let _ = (source, request, batch);
    }

    /// Largest body this source accepts, when lower than the server's limit.
    fn max_body_bytes(&self) -> Option<usize> {
        None
    }

    /// A task the source runs for as long as the server does, such as polling a
    /// mailbox, submitting what it fetches through `intake`. `serve` starts it once the
    /// journal exists and treats its end as a failure, so it should never return.
    fn background(&self, intake: intake::Intake) -> Option<Pending<'static, ()>> {
        let _ = intake;
        None
    }

    /// The bearer token a client sends to this source, for `backchannel import`,
    /// which posts files to the running server as the provider would.
    fn bearer_token(&self) -> Option<&str> {
        None
    }

    /// For a source that pages post to from their own origin (browser reports): the
    /// `Access-Control-Allow-Origin` to answer a page of `origin` with, in a preflight
    /// and on the POST. `None`, the default, takes no cross-origin posts from pages.
    fn cors_allow_origin(&self, origin: &str) -> Option<String> {
        let _ = origin;
        None
    }
}

/// A configured source, ready to verify and parse requests.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: Arc<str>,
    pub backchannel: Arc<dyn Backchannel>,
}

impl Source {
    pub fn new(id: &str, backchannel: impl Backchannel + 'static) -> Self {
        Self {
            id: Arc::from(id),
            backchannel: Arc::new(backchannel),
        }
    }

    /// Checks the request's credentials over the raw body. Runs before any parsing.
    pub async fn verify(&self, request: Request<'_>) -> Result<(), SourceError> {
        self.backchannel.verify(&self.id, request).await
    }

    /// Parses a verified body. `received_ms` stands in for missing event times.
    pub fn parse(&self, body: &[u8], received_ms: i64) -> Result<ParsedBatch, SourceError> {
        self.backchannel.parse(&self.id, body, received_ms)
    }

    /// Whether requests to this source are checked for a signature.
    pub fn is_verified(&self) -> bool {
        self.backchannel.is_verified()
    }
}

/// Source types `configure` knows, for the config error naming them.
pub const TYPES: &[&str] = &[
    "sendgrid",
    "dmarc",
    "csp",
    "sns",
    "eventbridge",
    "alertmanager",
    "webhook",
    "mapping",
];

/// Kinds and labels of the providers whose sets are closed enough to warn about typos.
pub const VOCABULARIES: &[Vocabulary] = &[
    sendgrid::VOCABULARY,
    dmarc::VOCABULARY,
    csp::CSP_VOCABULARY,
    csp::BROWSER_VOCABULARY,
    aws::VOCABULARY,
    aws::SES_VOCABULARY,
];

/// Builds the source of config type `kind` from its settings; `None` after reporting
/// what is wrong through `settings`.
pub fn configure(kind: &str, settings: &mut SourceSettings<'_>) -> Option<Arc<dyn Backchannel>> {
    match kind {
        "sendgrid" => sendgrid::configure(settings),
        "dmarc" => dmarc::configure(settings),
        "csp" => csp::configure(settings),
        "alertmanager" => alertmanager::configure(settings),
        "webhook" => webhook::configure(settings),
        "mapping" => mapping::configure(settings),
        "sns" => aws::configure_sns(settings),
        "eventbridge" => aws::configure_eventbridge(settings),
        other => {
            settings.error(
                "type",
                format!("expected one of {}, found {other:?}", TYPES.join(", ")),
            );
            None
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
