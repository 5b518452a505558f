//! The generic webhook source: backchannel's own event format (`format.rs`), signed
//! the Standard Webhooks way (`signature.rs`), for any service that wants to tell its
//! clients what went wrong on their side ("too many columns", "90% of your quota").

pub mod format;
pub mod signature;

use std::sync::Arc;

use serde::Deserialize;

pub use format::Format;
pub use signature::{ID_HEADER, SIGNATURE_HEADER, Signed, SigningSecret, TIMESTAMP_HEADER};

use super::auth::{Auth, RawAuth};
use super::{Backchannel, ParsedBatch, Pending, Request, SourceError};
use crate::config::SourceSettings;
use crate::event::Event;

/// A body larger than this is not a batch of events but a mistake.
const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// A configured generic webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `None` accepts unsigned requests (a warning says so at start-up).
    pub secret: Option<SigningSecret>,
    pub tolerance_secs: i64,
    /// For senders that cannot sign: a fixed credential instead.
    pub auth: Option<Auth>,
    pub format: Format,
    pub max_body_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The Standard Webhooks signing secret, `whsec_<base64>`.
    secret: Option<String>,
    /// Largest accepted distance between `webhook-timestamp` and now (default 5m).
    timestamp_tolerance: Option<String>,
    /// Kind prefixes the sender may use, such as `["acme."]`; unset allows any.
    #[serde(default)]
    kind_prefixes: Vec<String>,
    /// Largest body accepted, in bytes (default 1 MiB).
    max_body_bytes: Option<usize>,
    /// `Authorization: Bearer <token>`, for a sender that cannot sign.
    token: Option<String>,
    /// HTTP basic auth, for a sender that cannot sign.
    username: Option<String>,
    password: Option<String>,
}

pub fn configure(settings: &mut SourceSettings<'_>) -> Option<Arc<dyn Backchannel>> {
    let raw: Settings = settings.parse()?;
    let secret = match settings.secret("secret", raw.secret) {
        None => None,
        Some(text) => match SigningSecret::parse(&text) {
            Ok(secret) => Some(secret),
            Err(e) => {
                settings.error("secret", format!("expected whsec_<base64>, but it is {e}"));
                None
            }
        },
    };
    let auth = Auth::configure(
        settings,
        RawAuth {
            token: raw.token,
            username: raw.username,
            password: raw.password,
            ..RawAuth::default()
        },
    );
    if secret.is_none() && auth.is_none() {
        settings.warn("no secret, so unsigned events are accepted");
    }
    for prefix in &raw.kind_prefixes {
        if !prefix.ends_with('.') || prefix.len() < 2 {
            settings.error(
                "kind_prefixes",
                format!("expected prefixes ending in a dot, such as \"acme.\", found {prefix:?}"),
            );
        }
    }
    let tolerance_ms = settings.duration(
        "timestamp_tolerance",
        raw.timestamp_tolerance.as_deref(),
        300_000,
    );
    Some(Arc::new(Webhook {
        secret,
        tolerance_secs: tolerance_ms / 1000,
        auth,
        format: Format {
            kind_prefixes: raw.kind_prefixes,
        },
        max_body_bytes: raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
    }))
}

/// Refuses a declared content type that is not JSON; a missing one is let through,
/// since the body is checked as JSON anyway.
pub fn check_json_media(source: &str, request: &Request<'_>) -> Result<(), SourceError> {
    match request.media_type() {
        Some(media) if media != "application/json" && !media.ends_with("+json") => {
            Err(SourceError::UnsupportedMediaType(format!(
                "source {source:?}: content-type {media:?} is not supported; send \
                 application/json"
            )))
        }
        _ => Ok(()),
    }
}

impl Webhook {
    fn check(&self, source: &str, request: &Request<'_>) -> Result<(), SourceError> {
        if let Some(auth) = &self.auth {
            auth.check(source, request)?;
        }
        if let Some(secret) = &self.secret {
            let signed = Signed {
                id: request.header(ID_HEADER),
                timestamp: request.header(TIMESTAMP_HEADER),
                signature: request.header(SIGNATURE_HEADER),
            };
            secret
                .verify(
                    &signed,
                    request.body,
                    request.now_ms.div_euclid(1000),
                    self.tolerance_secs,
                )
                .map_err(|e| SourceError::Unauthorized(format!("source {source:?}: {e}")))?;
        }
        check_json_media(source, request)
    }
}

impl Backchannel for Webhook {
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
        self.format.parse(source, body, received_ms)
    }

    fn is_verified(&self) -> bool {
        self.secret.is_some() || self.auth.is_some()
    }

    /// A Standard Webhooks sender keeps `webhook-id` across retries of one delivery and
    /// changes it for the next, so an event without its own `id` is known by the
    /// delivery id and its place in the body: two identical events sent apart count
    /// twice, a retry once.
    fn request_keys(
        &self,
        source: &str,
        request: &crate::sources::Request<'_>,
        batch: &mut crate::sources::ParsedBatch,
    ) {
        let Some(delivery) = request
            .header("webhook-id")
            .map(str::trim)
            .filter(|id| !id.is_empty())
        else {
            return;
        };
        for parsed in batch
            .events
            .iter_mut()
            .filter(|e| e.event.provider_id.is_none())
        {
            let position = parsed.position.to_string();
            parsed.keys = Some(crate::sources::dedup_key(
                source,
                &["webhook-id", delivery, &position],
            ));
        }
    }

    fn passthrough(&self, event: &Event) -> serde_json::Map<String, serde_json::Value> {
        passthrough_of(&event.raw)
    }

    fn max_body_bytes(&self) -> Option<usize> {
        Some(self.max_body_bytes)
    }
}

/// The `passthrough` object of a raw event, or nothing.
pub fn passthrough_of(raw: &str) -> serde_json::Map<String, serde_json::Value> {
    #[derive(Deserialize)]
    struct Only {
        passthrough: Option<serde_json::Map<String, serde_json::Value>>,
    }
    serde_json::from_str::<Only>(raw)
        .ok()
        .and_then(|o| o.passthrough)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn configured(table: &str) -> Result<Arc<dyn Backchannel>, Vec<String>> {
        SourceSettings::check_alone("sources.up", toml::from_str(table).unwrap(), configure)
    }

    #[test]
    fn settings_are_checked() {
        assert!(
            configured(&format!("secret = \"{SECRET}\""))
                .unwrap()
                .is_verified()
        );
        assert!(!configured("").unwrap().is_verified());
        let errors = configured("secret = \"nope!\"\nkind_prefixes = [\"acme\"]").unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(configured("secrett = \"x\"").is_err());
    }

    #[test]
    fn signed_requests_and_content_types() {
        let hook = Webhook {
            secret: Some(SigningSecret::parse(SECRET).unwrap()),
            tolerance_secs: 300,
            auth: None,
            format: Format::default(),
            max_body_bytes: 100,
        };
        let body = br#"{"kind":"a.b"}"#;
        let secret = SigningSecret::parse(SECRET).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(ID_HEADER, "msg_1".parse().unwrap());
        headers.insert(TIMESTAMP_HEADER, "1700000000".parse().unwrap());
        headers.insert(
            SIGNATURE_HEADER,
            secret.sign("msg_1", "1700000000", body).parse().unwrap(),
        );
        let request = |headers: &HeaderMap| {
            let request = Request {
                headers,
                body,
                now_ms: 1_700_000_010_000,
                peer: None,
            };
            hook.check("up", &request)
        };
        assert_eq!(request(&headers), Ok(()));
        headers.insert("content-type", "text/plain".parse().unwrap());
        assert!(matches!(
            request(&headers),
            Err(SourceError::UnsupportedMediaType(_))
        ));
        headers.insert(
            "content-type",
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(request(&headers), Ok(()));
        headers.insert(ID_HEADER, "msg_2".parse().unwrap());
        assert!(matches!(
            request(&headers),
            Err(SourceError::Unauthorized(_))
        ));
    }

    #[test]
    fn passthrough_is_read_from_the_raw_event() {
        let map = passthrough_of(r#"{"kind":"a.b","passthrough":{"order":"o-1"}}"#);
        assert_eq!(map["order"], "o-1");
        assert!(passthrough_of(r#"{"kind":"a.b","passthrough":3}"#).is_empty());
    }
}
