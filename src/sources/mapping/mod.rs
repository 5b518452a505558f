//! The mapping source: any other JSON webhook (Mailgun, Postmark, a Stripe-like
//! service), read through JSON pointers given in the config (`parse.rs`), after an
//! optional HMAC, Mailgun signature or shared-credential check (`signature.rs`).

pub mod parse;
pub mod signature;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

pub use parse::{Mapping, Piece, TimeUnit};
pub use signature::{Algorithm, Encoding, HeaderHmac, MailgunSignature};

use super::auth::{Auth, RawAuth};
use super::webhook::check_json_media;
use super::{Backchannel, ParsedBatch, Pending, Request, SourceError};
use crate::config::SourceSettings;

/// A body larger than this is not one provider event but a mistake.
const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// A configured mapping source.
#[derive(Debug, Clone)]
pub struct MappingSource {
    pub mapping: Mapping,
    pub hmac: Option<HeaderHmac>,
    pub mailgun: Option<MailgunSignature>,
    pub auth: Option<Auth>,
    pub max_body_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Kind template: a fixed prefix and `{/pointer}` placeholders,
    /// `"mailgun.{/event-data/event}"`.
    kind: String,
    /// Pointer (or pointers, the first present wins) to the event time: epoch seconds
    /// or milliseconds, or RFC 3339 text.
    time: Option<OneOrMany>,
    /// `s` or `ms`, for a numeric time; unset, the magnitude decides.
    time_unit: Option<String>,
    /// Pointer (or pointers, the first present wins) to the provider's event id.
    id: Option<OneOrMany>,
    /// Label name to the pointer of its value.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Pointers to the event's weight, measured value and limit.
    weight: Option<String>,
    value: Option<String>,
    limit: Option<String>,
    /// Pointer to a W3C `traceparent` the sender attached.
    traceparent: Option<String>,
    /// Pointer to an array of events, for a body that holds several.
    events: Option<String>,
    /// An HMAC of the raw body in a header.
    signature: Option<RawHeaderHmac>,
    /// Mailgun's signature block inside the body.
    mailgun_signature: Option<RawMailgun>,
    /// `Authorization: Bearer <token>`.
    token: Option<String>,
    /// HTTP basic auth (Postmark's webhook credentials).
    username: Option<String>,
    password: Option<String>,
    /// Largest body accepted, in bytes (default 1 MiB).
    max_body_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderHmac {
    /// Header carrying the signature, such as `x-hub-signature-256`.
    header: String,
    /// The shared secret, as text (its bytes are the HMAC key).
    secret: String,
    /// `hex` (default) or `base64`.
    encoding: Option<String>,
    /// `sha256` (default) or `sha512`.
    algorithm: Option<String>,
    /// Text before the signature in the header, such as `sha256=`.
    #[serde(default)]
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailgun {
    /// Mailgun's HTTP webhook signing key.
    signing_key: String,
    /// Refuse signatures whose timestamp is further than this from now.
    max_age: Option<String>,
}

pub fn configure(settings: &mut SourceSettings<'_>) -> Option<Arc<dyn Backchannel>> {
    let raw: Settings = settings.parse()?;
    let kind = match kind_template(&raw.kind) {
        Ok(kind) => kind,
        Err(e) => {
            settings.error("kind", e);
            Vec::new()
        }
    };
    let mut pointer = |field: &str, value: Option<String>| -> Option<String> {
        let value = value?;
        if let Err(e) = check_pointer(&value) {
            settings.error(field, e);
        }
        Some(value)
    };
    let weight = pointer("weight", raw.weight);
    let value = pointer("value", raw.value);
    let limit = pointer("limit", raw.limit);
    let traceparent = pointer("traceparent", raw.traceparent);
    let events = pointer("events", raw.events);
    let mut pointers = |field: &str, value: Option<OneOrMany>| -> Vec<String> {
        let all = match value {
            None => Vec::new(),
            Some(OneOrMany::One(one)) => vec![one],
            Some(OneOrMany::Many(many)) => many,
        };
        for each in &all {
            if let Err(e) = check_pointer(each) {
                settings.error(field, e);
            }
        }
        all
    };
    let id = pointers("id", raw.id);
    let time = pointers("time", raw.time);
    let mut labels = Vec::new();
    for (name, at) in raw.labels {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            });
        if !valid || name == "source" {
            settings.error(
                "labels",
                format!(
                    "expected a label name of letters, digits and _ (not source), found {name:?}"
                ),
            );
        }
        if let Err(e) = check_pointer(&at) {
            settings.error(&format!("labels.{name}"), e);
        }
        labels.push((name, at));
    }
    let time_unit = match raw.time_unit.as_deref() {
        None => TimeUnit::Guess,
        Some("s") => TimeUnit::Seconds,
        Some("ms") => TimeUnit::Millis,
        Some(other) => {
            settings.error(
                "time_unit",
                format!("expected \"s\" or \"ms\", found {other:?}"),
            );
            TimeUnit::Guess
        }
    };

    let hmac = raw.signature.and_then(|raw| header_hmac(settings, raw));
    let mailgun = raw.mailgun_signature.and_then(|raw| {
        let key = settings.secret("mailgun_signature.signing_key", Some(raw.signing_key));
        let max_age_secs = raw
            .max_age
            .as_deref()
            .map(|text| settings.duration("mailgun_signature.max_age", Some(text), 0) / 1000);
        match key {
            Some(key) => Some(MailgunSignature {
                signing_key: key.into_bytes(),
                max_age_secs,
            }),
            None => {
                settings.warn("mailgun_signature.signing_key is empty, so nothing is checked");
                None
            }
        }
    });
    let auth = Auth::configure(
        settings,
        RawAuth {
            token: raw.token,
            username: raw.username,
            password: raw.password,
            ..RawAuth::default()
        },
    );
    if hmac.is_none() && mailgun.is_none() && auth.is_none() {
        settings.warn("no signature or credential, so unsigned events are accepted");
    }
    Some(Arc::new(MappingSource {
        mapping: Mapping {
            kind,
            time,
            time_unit,
            id,
            labels,
            weight,
            value,
            limit,
            traceparent,
            events,
        },
        hmac,
        mailgun,
        auth,
        max_body_bytes: raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
    }))
}

fn header_hmac(settings: &mut SourceSettings<'_>, raw: RawHeaderHmac) -> Option<HeaderHmac> {
    let header = raw.header.trim().to_ascii_lowercase();
    if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        settings.error(
            "signature.header",
            format!("expected a header name, found {header:?}"),
        );
    }
    let encoding = match raw.encoding.as_deref() {
        None | Some("hex") => Encoding::Hex,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            let message = format!("expected \"hex\" or \"base64\", found {other:?}");
            settings.error("signature.encoding", message);
            Encoding::Hex
        }
    };
    let algorithm = match raw.algorithm.as_deref() {
        None | Some("sha256") => Algorithm::Sha256,
        Some("sha512") => Algorithm::Sha512,
        Some(other) => {
            let message = format!("expected \"sha256\" or \"sha512\", found {other:?}");
            settings.error("signature.algorithm", message);
            Algorithm::Sha256
        }
    };
    match settings.secret("signature.secret", Some(raw.secret)) {
        Some(secret) => Some(HeaderHmac {
            header,
            secret: secret.into_bytes(),
            encoding,
            algorithm,
            prefix: raw.prefix,
        }),
        None => {
            settings.warn("signature.secret is empty, so nothing is checked");
            None
        }
    }
}

/// Reads a kind template into pieces. It must start with a fixed prefix ending in a
/// dot (`mailgun.`), so a provider's words can never make a kind of another source.
pub fn kind_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("{text:?} has a {{ without its }}"))?;
                let pointer = &rest[1..end];
                check_pointer(pointer)?;
                pieces.push(Piece::Pointer(pointer.to_string()));
                rest = &rest[end + 1..];
            }
            found => {
                let end = found.unwrap_or(rest.len());
                let literal = &rest[..end];
                let allowed = literal.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                });
                if !allowed {
                    return Err(format!(
                        "{text:?}: the fixed text {literal:?} may hold only a-z, 0-9, ., _ and -"
                    ));
                }
                pieces.push(Piece::Literal(literal.to_string()));
                rest = &rest[end..];
            }
        }
    }
    match pieces.first() {
        Some(Piece::Literal(prefix)) if prefix.contains('.') && !prefix.starts_with('.') => {
            Ok(pieces)
        }
        _ => Err(format!(
            "{text:?} does not start with a fixed prefix such as \"mailgun.\""
        )),
    }
}

/// Checks RFC 6901 syntax: empty, or `/`-separated tokens where `~` escapes only 0 and 1.
pub fn check_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "expected a JSON pointer starting with /, found {pointer:?}"
        ));
    }
    let bytes = pointer.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err(format!("{pointer:?}: ~ must be followed by 0 or 1"));
        }
    }
    Ok(())
}

impl MappingSource {
    fn check(&self, source: &str, request: &Request<'_>) -> Result<(), SourceError> {
        let refused = |e: String| SourceError::Unauthorized(format!("source {source:?}: {e}"));
        if let Some(auth) = &self.auth {
            auth.check(source, request)?;
        }
        if let Some(hmac) = &self.hmac {
            hmac.verify(request.header(&hmac.header), request.body)
                .map_err(refused)?;
        }
        if let Some(mailgun) = &self.mailgun {
            mailgun
                .verify(request.body, request.now_ms.div_euclid(1000))
                .map_err(refused)?;
        }
        check_json_media(source, request)
    }
}

impl Backchannel for MappingSource {
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
        self.mapping.parse(source, body, received_ms)
    }

    fn is_verified(&self) -> bool {
        self.hmac.is_some() || self.mailgun.is_some() || self.auth.is_some()
    }

    fn max_body_bytes(&self) -> Option<usize> {
        Some(self.max_body_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(table: &str) -> Result<Arc<dyn Backchannel>, Vec<String>> {
        SourceSettings::check_alone("sources.m", toml::from_str(table).unwrap(), configure)
    }

    #[test]
    fn kind_templates() {
        assert_eq!(
            kind_template("mailgun.{/event-data/event}").unwrap(),
            [
                Piece::Literal("mailgun.".into()),
                Piece::Pointer("/event-data/event".into())
            ]
        );
        assert_eq!(kind_template("stripe.charge").unwrap().len(), 1);
        for bad in [
            "{/event}",
            ".x",
            "Mailgun.{/e}",
            "mailgun.{/e",
            "mailgun.{e}",
            "plain",
        ] {
            assert!(kind_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(check("kind = \"x.{/type}\"\nlabels = { domain = \"/to\" }").is_ok());
        let signed = check(
            "kind = \"x.y\"\n[signature]\nheader = \"X-Sig\"\nsecret = \"s\"\nprefix = \"sha256=\"",
        );
        assert!(signed.unwrap().is_verified());
        let errors = check(
            "kind = \"x.y\"\ntime = \"at\"\nid = [\"/a\", \"b~2\"]\ntime_unit = \"h\"\n\
             labels = { source = \"/s\" }",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(check("kind = \"x.y\"\nkindd = 1").is_err());
        assert!(check("time = \"/t\"").is_err(), "kind is required");
        let bad_hmac = "kind = \"x.y\"\n[signature]\nheader = \"x\"\nsecret = \"s\"\n\
                        encoding = \"b32\"";
        assert!(check(bad_hmac).is_err());
    }
}
