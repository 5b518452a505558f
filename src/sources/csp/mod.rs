//! Browser reports: CSP violations from `report-uri` and the Reporting API
//! (`report-to`, `Reporting-Endpoints`), and the Reporting API's other report types
//! (deprecation, intervention, crash, network-error).
//!
//! Browsers send reports without credentials, so nothing here verifies a sender. The
//! endpoint is protected instead by what a page owner can state: the origins of their
//! pages (`allowed_origins`, checked against each report's document), a small body
//! limit, and a rate limit per client address. Parsing is in `parse.rs`, label values
//! in `normalise.rs`; answering CORS preflights is left to `http/`, which asks
//! [`Backchannel::cors_allow_origin`].

mod json;
mod limit;
pub mod normalise;
pub mod origins;
pub mod parse;

use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;

pub use limit::RateLimiter;
pub use origins::AllowedOrigins;

use super::{Backchannel, ParsedBatch, Pending, Request, SourceError, Vocabulary};
use crate::config::SourceSettings;

/// Content types browsers and the proxies in front of collectors use for reports.
pub const MEDIA_TYPES: &[&str] = &[
    "application/csp-report",
    "application/reports+json",
    "application/json",
];

/// Reports are small; a page's worth of violations in one Reporting API batch stays
/// well under this.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// A page with many violations sends one legacy report per violation at once.
pub const DEFAULT_RATE_PER_MINUTE: u32 = 60;
pub const DEFAULT_BURST: u32 = 60;

/// A configured browser-reports endpoint.
#[derive(Debug)]
pub struct Csp {
    pub allowed: AllowedOrigins,
    pub max_body_bytes: usize,
    /// `None`: no rate limit.
    pub limiter: Option<RateLimiter>,
    /// A header a proxy in front sets to the client's address.
    pub client_ip_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Origins of the pages whose reports are taken: `"https://app.example.com"`,
    /// `"https://*.example.com"` (subdomains), or `"*"` for any page.
    allowed_origins: Option<Vec<String>>,
    /// Largest request body, in bytes.
    max_body_bytes: Option<usize>,
    /// Requests one client address may send a minute on average; 0 turns the limit off.
    rate_limit_per_minute: Option<u32>,
    /// Requests one client address may send at once.
    rate_limit_burst: Option<u32>,
    /// Header a reverse proxy sets to the client's address (`x-forwarded-for`: its last
    /// entry), read in place of the connection's address when present.
    client_ip_header: Option<String>,
}

pub fn configure(settings: &mut SourceSettings<'_>) -> Option<Arc<dyn Backchannel>> {
    let raw: Settings = settings.parse()?;
    let allowed = match raw.allowed_origins.as_deref() {
        None | Some([]) => {
            settings.error(
                "allowed_origins",
                "expected the origins of the pages that send reports, such as \
                 [\"https://app.example.com\"], or [\"*\"] for any page",
            );
            None
        }
        Some(entries) => match AllowedOrigins::parse(entries) {
            Ok(allowed) => Some(allowed),
            Err(message) => {
                settings.error("allowed_origins", message);
                None
            }
        },
    };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        settings.error("max_body_bytes", "expected a positive number of bytes");
    }
    let per_minute = raw.rate_limit_per_minute.unwrap_or(DEFAULT_RATE_PER_MINUTE);
    let burst = raw.rate_limit_burst.unwrap_or(DEFAULT_BURST);
    if per_minute > 0 && burst == 0 {
        settings.error("rate_limit_burst", "expected at least 1 request");
    }
    let client_ip_header = match raw.client_ip_header.map(|h| h.trim().to_ascii_lowercase()) {
        None => None,
        Some(name) => match axum::http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(_) => Some(name),
            Err(_) => {
                settings.error(
                    "client_ip_header",
                    format!("expected an HTTP header name, found {name:?}"),
                );
                None
            }
        },
    };
    let allowed = allowed?;
    if allowed.is_any() {
        settings.warn("allowed_origins is \"*\", so reports about any page are taken");
    }
    Some(Arc::new(Csp {
        allowed,
        max_body_bytes: max_body_bytes.max(1),
        limiter: (per_minute > 0).then(|| RateLimiter::new(per_minute, burst)),
        client_ip_header,
    }))
}

impl Csp {
    /// The client a request counts against: the proxy's header when configured and
    /// readable, else the connection's address.
    fn client(&self, request: &Request<'_>) -> Option<IpAddr> {
        let from_header = self
            .client_ip_header
            .as_deref()
            .and_then(|name| request.header(name))
            .and_then(|value| value.rsplit(',').next())
            .and_then(|last| {
                let last = last.trim();
                last.parse::<IpAddr>()
                    .ok()
                    .or_else(|| last.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
            });
        from_header.or(request.peer)
    }

    fn check(&self, source: &str, request: &Request<'_>) -> Result<(), SourceError> {
        if let Some(limiter) = &self.limiter
            && let Err(retry_after_secs) = limiter.check(self.client(request), request.now_ms)
        {
            return Err(SourceError::RateLimited {
                message: format!(
                    "source {source:?}: too many reports from this client; \
                     retry in {retry_after_secs} s"
                ),
                retry_after_secs,
            });
        }
        match request.media_type() {
            Some(media) if MEDIA_TYPES.contains(&media.as_str()) => Ok(()),
            Some(media) => Err(SourceError::UnsupportedMediaType(format!(
                "source {source:?}: content type {:?} is not a report; expected {}",
                media.chars().take(80).collect::<String>(),
                MEDIA_TYPES.join(", ")
            ))),
            None => Err(SourceError::UnsupportedMediaType(format!(
                "source {source:?}: no Content-Type; expected {}",
                MEDIA_TYPES.join(", ")
            ))),
        }
    }
}

impl Backchannel for Csp {
    fn verify<'a>(
        &'a self,
        source: &'a str,
        request: Request<'a>,
    ) -> Pending<'a, Result<(), SourceError>> {
        Box::pin(std::future::ready(self.check(source, &request)))
    }

    fn parse(
        &self,
        source: &Arc<str>,
        body: &[u8],
        received_ms: i64,
    ) -> Result<ParsedBatch, SourceError> {
        parse::parse_body(source, &self.allowed, body, received_ms)
    }

    fn is_verified(&self) -> bool {
        false
    }

    fn max_body_bytes(&self) -> Option<usize> {
        Some(self.max_body_bytes)
    }

    fn cors_allow_origin(&self, origin: &str) -> Option<String> {
        if self.allowed.is_any() {
            Some("*".into())
        } else {
            self.allowed
                .allows_origin(origin)
                .then(|| origin.trim().to_string())
        }
    }
}

/// The kind of every CSP violation, whichever form it came in.
pub const CSP_VIOLATION: &str = "csp.violation";

/// Reporting API kinds documented here; other report types become `browser.<type>`.
pub const KNOWN_KINDS: &[&str] = &[
    "browser.deprecation",
    "browser.intervention",
    "browser.crash",
    "browser.network_error",
];

/// What `check` knows of CSP violations.
pub const CSP_VOCABULARY: Vocabulary = Vocabulary {
    provider: "CSP",
    prefix: "csp.",
    kinds: &[CSP_VIOLATION],
    labels: &[
        "blocked",
        "directive",
        "disposition",
        "host",
        "path",
        "source",
    ],
};

/// What `check` knows of the other browser reports.
pub const BROWSER_VOCABULARY: Vocabulary = Vocabulary {
    provider: "browser report",
    prefix: "browser.",
    kinds: KNOWN_KINDS,
    labels: &[
        "error", "feature", "host", "path", "phase", "reason", "source", "status",
    ],
};

#[cfg(test)]
mod tests;
