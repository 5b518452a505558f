//! AWS sources: an SNS HTTP(S) subscription endpoint (`type = "sns"`) and an EventBridge
//! API destination (`type = "eventbridge"`).
//!
//! Both carry the same payloads in the end: EventBridge events (Spot interruptions, Health
//! events, Auto Scaling lifecycle actions, …) and, through SNS, Amazon SES bounce and
//! complaint notifications. `sns.rs` checks an SNS envelope (signature, topic, age) and
//! confirms subscriptions; `fetch.rs` is the one place that calls out (signing
//! certificates, `SubscribeURL`), which the SNS protocol requires before a request can be
//! trusted; `parse.rs`, `eventbridge.rs` and `ses.rs` turn verified bodies into events
//! and never touch the network or the clock.

pub mod eventbridge;
pub mod fetch;
pub mod parse;
pub mod ses;
pub mod sns;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;

pub use parse::{parse_eventbridge_body, parse_sns_body};

use super::auth::{Auth, RawAuth};
use super::{Backchannel, ParsedBatch, Pending, Request, SourceError, Vocabulary};
use crate::config::SourceSettings;
use crate::event::Event;
use fetch::Fetcher;
use sns::HostPattern;

/// Largest body either source accepts by default. SNS and EventBridge both cap a
/// message at 256 KiB, and SNS's JSON escaping of an embedded JSON message can grow it.
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// How old an SNS `Timestamp` may be: SNS stops retrying an HTTP(S) delivery after at
/// most 3600 s of total retry time, plus five minutes for clock differences.
const DEFAULT_MAX_MESSAGE_AGE_MS: i64 = 65 * 60 * 1000;

/// A configured SNS subscription endpoint.
#[derive(Debug)]
pub struct Sns {
    /// Topic ARNs (with `*` wildcards) whose messages are accepted.
    pub topics: Vec<String>,
    /// Hosts `SigningCertURL` and `SubscribeURL` may point at.
    pub hosts: Vec<HostPattern>,
    pub max_message_age_ms: i64,
    /// `false` only for tests with documentation samples, whose signatures are fake.
    pub verify_signatures: bool,
    /// An extra credential (SNS can send basic auth from the endpoint URL).
    pub auth: Option<Auth>,
    pub max_body_bytes: usize,
    pub fetcher: Fetcher,
}

/// A configured EventBridge API destination.
#[derive(Debug)]
pub struct EventBridge {
    /// `None` accepts unauthenticated requests (a warning says so at start-up).
    pub auth: Option<Auth>,
    pub max_body_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnsSettings {
    /// Topic ARNs to accept; `*` matches any run of characters
    /// (`arn:aws:sns:*:123456789012:*`). Required.
    topics: Vec<String>,
    /// Longest accepted age of a message's `Timestamp` (default 65m).
    max_message_age: Option<String>,
    /// Host patterns for `SigningCertURL` and `SubscribeURL`; `*` is one DNS label.
    allowed_hosts: Option<Vec<String>>,
    /// Checks SNS signatures (default true). Turn off only to post documentation
    /// samples in tests.
    verify_signatures: Option<bool>,
    /// Test only: send certificate fetches and confirmations over plain HTTP to this
    /// loopback address instead of the URL's host (which must still be allowed).
    test_connect_to: Option<String>,
    /// Largest accepted body in bytes (default 1 MiB).
    max_body_bytes: Option<usize>,
    token: Option<String>,
    api_key_header: Option<String>,
    api_key: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBridgeSettings {
    /// Largest accepted body in bytes (default 1 MiB).
    max_body_bytes: Option<usize>,
    /// The API destination connection's credential: an API-key header, basic auth, or
    /// a bearer token.
    token: Option<String>,
    api_key_header: Option<String>,
    api_key: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The hosts SNS signs from, in the commercial, GovCloud and China partitions.
const DEFAULT_HOSTS: &[&str] = &["sns.*.amazonaws.com", "sns.*.amazonaws.com.cn"];

pub fn configure_sns(settings: &mut SourceSettings<'_>) -> Option<Arc<dyn Backchannel>> {
    let raw: SnsSettings = settings.parse()?;
    let topics: Vec<String> = raw
        .topics
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if topics.is_empty() {
        settings.error("topics", "expected at least one topic ARN to accept");
    }
    let mut hosts = Vec::new();
    let patterns = raw
        .allowed_hosts
        .unwrap_or_else(|| DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect());
    for pattern in &patterns {
        match HostPattern::new(pattern) {
            Ok(host) => hosts.push(host),
            Err(e) => settings.error("allowed_hosts", e),
        }
    }
    if hosts.is_empty() {
        settings.error("allowed_hosts", "expected at least one host pattern");
    }
    let connect_to = match raw.test_connect_to.as_deref().map(str::parse::<SocketAddr>) {
        None => None,
        Some(Ok(addr)) if addr.ip().is_loopback() => {
            settings.warn("test_connect_to is set: certificates are fetched over plain HTTP");
            Some(addr)
        }
        Some(_) => {
            settings.error(
                "test_connect_to",
                "expected a loopback address and port such as \"127.0.0.1:8080\"",
            );
            None
        }
    };
    let verify_signatures = raw.verify_signatures.unwrap_or(true);
    if !verify_signatures {
        settings.warn("verify_signatures = false: anyone can post SNS messages here");
    }
    let max_message_age_ms = settings.duration(
        "max_message_age",
        raw.max_message_age.as_deref(),
        DEFAULT_MAX_MESSAGE_AGE_MS,
    );
    let auth = Auth::configure(
        settings,
        RawAuth {
            token: raw.token,
            api_key_header: raw.api_key_header,
            api_key: raw.api_key,
            username: raw.username,
            password: raw.password,
        },
    );
    Some(Arc::new(Sns {
        topics,
        hosts,
        max_message_age_ms,
        verify_signatures,
        auth,
        max_body_bytes: raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        fetcher: Fetcher::new(connect_to),
    }))
}

pub fn configure_eventbridge(settings: &mut SourceSettings<'_>) -> Option<Arc<dyn Backchannel>> {
    let raw: EventBridgeSettings = settings.parse()?;
    let auth = Auth::configure(
        settings,
        RawAuth {
            token: raw.token,
            api_key_header: raw.api_key_header,
            api_key: raw.api_key,
            username: raw.username,
            password: raw.password,
        },
    );
    if auth.is_none() {
        settings.warn("no api_key_header/api_key or username/password: requests are not checked");
    }
    Some(Arc::new(EventBridge {
        auth,
        max_body_bytes: raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
    }))
}

impl Backchannel for Sns {
    fn verify<'a>(
        &'a self,
        source: &'a str,
        request: Request<'a>,
    ) -> Pending<'a, Result<(), SourceError>> {
        Box::pin(sns::verify(self, source, request))
    }

    fn parse(
        &self,
        source: &Arc<str>,
        body: &[u8],
        received_ms: i64,
    ) -> Result<ParsedBatch, SourceError> {
        parse_sns_body(source, body, received_ms)
    }

    fn is_verified(&self) -> bool {
        self.verify_signatures
    }

    fn passthrough(&self, event: &Event) -> serde_json::Map<String, serde_json::Value> {
        parse::message_attributes(&event.raw)
    }

    fn max_body_bytes(&self) -> Option<usize> {
        Some(self.max_body_bytes)
    }
}

impl Backchannel for EventBridge {
    fn verify<'a>(
        &'a self,
        source: &'a str,
        request: Request<'a>,
    ) -> Pending<'a, Result<(), SourceError>> {
        let result = check_json_media_type(source, &request).and_then(|()| match &self.auth {
            Some(auth) => auth.check(source, &request),
            None => Ok(()),
        });
        Box::pin(std::future::ready(result))
    }

    fn parse(
        &self,
        source: &Arc<str>,
        body: &[u8],
        received_ms: i64,
    ) -> Result<ParsedBatch, SourceError> {
        parse_eventbridge_body(source, body, received_ms)
    }

    fn is_verified(&self) -> bool {
        self.auth.is_some()
    }

    fn max_body_bytes(&self) -> Option<usize> {
        Some(self.max_body_bytes)
    }
}

/// API destinations send `application/json`; anything but JSON (a form, multipart) is
/// not an EventBridge event.
fn check_json_media_type(source: &str, request: &Request<'_>) -> Result<(), SourceError> {
    match request.media_type() {
        None => Ok(()),
        Some(media) if media == "application/json" || media.ends_with("+json") => Ok(()),
        Some(media) => Err(SourceError::UnsupportedMediaType(format!(
            "source {source:?}: content type {media:?} is not JSON; send application/json"
        ))),
    }
}

/// What `check` knows of the AWS events.
pub const VOCABULARY: Vocabulary = Vocabulary {
    provider: "AWS",
    prefix: "aws.",
    kinds: KNOWN_KINDS,
    labels: LABELS,
};

/// What `check` knows of the SES events, whose labels follow SendGrid's.
pub const SES_VOCABULARY: Vocabulary = Vocabulary {
    provider: "Amazon SES",
    prefix: "ses.",
    kinds: ses::KINDS,
    labels: ses::LABELS,
};

/// Every kind the AWS sources produce; unknown EventBridge detail-types are `aws.event`.
pub const KNOWN_KINDS: &[&str] = &[
    "aws.spot_interruption",
    "aws.rebalance_recommendation",
    "aws.ec2_state_change",
    "aws.health",
    "aws.autoscaling_lifecycle",
    "aws.event",
    "aws.sns_notification",
    "aws.sns_subscription_confirmation",
    "aws.sns_unsubscribe_confirmation",
];

/// Labels of AWS events (not every kind has every label).
pub const LABELS: &[&str] = &[
    "account",
    "auto_scaling_group",
    "availability_zone",
    "destination",
    "detail_type",
    "event_source",
    "event_type_category",
    "event_type_code",
    "instance_action",
    "instance_type",
    "lifecycle_hook",
    "origin",
    "region",
    "scope",
    "service",
    "state",
    "status_code",
    "topic",
    "transition",
];
