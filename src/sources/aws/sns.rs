//! SNS envelopes: what a request must be before its body is trusted.
//!
//! In order, cheapest and least revealing first: a JSON content type (SNS labels JSON
//! `text/plain`), a well-formed envelope, a topic on the allow-list, `SigningCertURL` and
//! `SubscribeURL` on an allowed https host, a fresh `Timestamp`, then the RSA signature
//! over the canonical string of the message's type, and only then, for a
//! `SubscriptionConfirmation`, the GET of `SubscribeURL`. Nothing is fetched for a
//! request that fails an earlier check. Turning the body into events is `parse.rs`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use serde::Deserialize;

use super::Sns;
use super::fetch::FetchError;
use crate::sources::{Request, SourceError};

/// How far in the future a `Timestamp` may be, for clocks that differ.
const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// The envelope fields SNS signs or that decide what to do. Every field is a string;
/// a duplicated field fails to parse, so the value checked is the value parsed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: Option<String>,
    pub topic_arn: Option<String>,
    pub subject: Option<String>,
    pub message: Option<String>,
    pub timestamp: Option<String>,
    pub signature_version: Option<String>,
    pub signature: Option<String>,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: Option<String>,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub token: Option<String>,
}

impl Envelope {
    pub fn from_body(body: &[u8]) -> Result<Self, String> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        serde_json::from_slice(body).map_err(|e| format!("body is not an SNS message: {e}"))
    }

    fn field<'a>(
        &'a self,
        name: &'static str,
        value: &'a Option<String>,
    ) -> Result<&'a str, String> {
        value
            .as_deref()
            .ok_or_else(|| format!("{} message has no {name}", self.kind))
    }

    /// The text SNS signs: `Name\nvalue\n` for each field of the message's type, in the
    /// documented order; `Subject` only when the notification has one.
    pub fn string_to_sign(&self) -> Result<String, String> {
        let mut fields: Vec<(&str, &str)> = Vec::with_capacity(7);
        match self.kind.as_str() {
            "Notification" => {
                fields.push(("Message", self.field("Message", &self.message)?));
                fields.push(("MessageId", self.field("MessageId", &self.message_id)?));
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject));
                }
                fields.push(("Timestamp", self.field("Timestamp", &self.timestamp)?));
                fields.push(("TopicArn", self.field("TopicArn", &self.topic_arn)?));
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                fields.push(("Message", self.field("Message", &self.message)?));
                fields.push(("MessageId", self.field("MessageId", &self.message_id)?));
                let url = self.field("SubscribeURL", &self.subscribe_url)?;
                fields.push(("SubscribeURL", url));
                fields.push(("Timestamp", self.field("Timestamp", &self.timestamp)?));
                fields.push(("Token", self.field("Token", &self.token)?));
                fields.push(("TopicArn", self.field("TopicArn", &self.topic_arn)?));
            }
            other => return Err(format!("unknown SNS message type {other:?}")),
        }
        fields.push(("Type", &self.kind));
        let mut text = String::new();
        for (name, value) in fields {
            text.push_str(name);
            text.push('\n');
            text.push_str(value);
            text.push('\n');
        }
        Ok(text)
    }
}

/// A host name pattern: `*` stands for exactly one DNS label (`sns.*.amazonaws.com`
/// allows `sns.eu-west-1.amazonaws.com`, not `sns.evil.example.amazonaws.com`).
#[derive(Debug, Clone)]
pub struct HostPattern {
    labels: Vec<String>,
}

impl HostPattern {
    pub fn new(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim().to_ascii_lowercase();
        let labels: Vec<String> = pattern.split('.').map(str::to_string).collect();
        let valid = labels.len() >= 2
            && labels.iter().all(|l| {
                l == "*"
                    || (!l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            });
        if !valid {
            return Err(format!(
                "expected a host name with `*` for one label, found {pattern:?}"
            ));
        }
        Ok(Self { labels })
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let parts: Vec<&str> = host.split('.').collect();
        parts.len() == self.labels.len()
            && parts.iter().zip(&self.labels).all(|(part, label)| {
                if label == "*" {
                    !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                } else {
                    part == label
                }
            })
    }
}

/// `url` parsed, if it is https on an allowed host with no credentials or other port.
pub fn allowed_url(text: &str, hosts: &[HostPattern]) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|_| "is not a URL".to_string())?;
    if url.scheme() != "https" {
        return Err(format!("is {}, not https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("carries credentials".into());
    }
    if url.port().is_some_and(|p| p != 443) {
        return Err("names a port other than 443".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(host)) => host,
        _ => return Err("has no host name".into()),
    };
    if !hosts.iter().any(|p| p.matches(host)) {
        return Err(format!("host {host:?} is not an allowed SNS host"));
    }
    Ok(url)
}

/// Whether `arn` is matched by `pattern`, where `*` matches any run of characters.
pub fn topic_matches(pattern: &str, arn: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = arn.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// An SNS `Timestamp` (ISO 8601, UTC) in milliseconds.
pub fn timestamp_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Checks `signature` (base64, strict) over `text` with an RSA key in DER form.
pub fn check_signature(
    version: &str,
    signature: &str,
    text: &str,
    rsa_der: &[u8],
) -> Result<(), String> {
    let algorithm = match version {
        "1" => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        "2" => &RSA_PKCS1_2048_8192_SHA256,
        other => return Err(format!("SignatureVersion {other:?} is not 1 or 2")),
    };
    let signature = STANDARD
        .decode(signature.trim())
        .map_err(|_| "Signature is not strict base64".to_string())?;
    UnparsedPublicKey::new(algorithm, rsa_der)
        .verify(text.as_bytes(), &signature)
        .map_err(|_| "signature does not verify".to_string())
}

/// Every check a request to an SNS source must pass; for a verified
/// `SubscriptionConfirmation`, also confirms the subscription.
pub async fn verify(sns: &Sns, source: &str, request: Request<'_>) -> Result<(), SourceError> {
    let refused = |message: String| format!("source {source:?}: {message}");
    match request.media_type().as_deref() {
        None | Some("text/plain" | "application/json") => {}
        Some(media) => {
            return Err(SourceError::UnsupportedMediaType(refused(format!(
                "content type {media:?} is not what SNS sends (text/plain or application/json)"
            ))));
        }
    }
    if let Some(auth) = &sns.auth {
        auth.check(source, &request)?;
    }
    if request
        .header("x-amz-sns-rawdelivery")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err(SourceError::BadRequest(refused(
            "raw message delivery carries no signature; turn it off for this subscription".into(),
        )));
    }
    let envelope =
        Envelope::from_body(request.body).map_err(|e| SourceError::BadRequest(refused(e)))?;
    if let Some(header) = request.header("x-amz-sns-message-type")
        && header.trim() != envelope.kind
    {
        return Err(SourceError::BadRequest(refused(format!(
            "x-amz-sns-message-type {header:?} does not match Type {:?}",
            envelope.kind
        ))));
    }
    let text = envelope
        .string_to_sign()
        .map_err(|e| SourceError::BadRequest(refused(e)))?;

    let topic = envelope.topic_arn.as_deref().unwrap_or_default();
    if !sns.topics.iter().any(|p| topic_matches(p, topic)) {
        return Err(SourceError::Forbidden(refused(format!(
            "topic {topic:?} is not in this source's topics"
        ))));
    }
    let subscribe_url = match (&envelope.kind[..], &envelope.subscribe_url) {
        ("SubscriptionConfirmation", Some(url)) => Some(
            allowed_url(url, &sns.hosts)
                .map_err(|e| SourceError::Forbidden(refused(format!("SubscribeURL {e}"))))?,
        ),
        _ => None,
    };

    let sent_ms = envelope
        .timestamp
        .as_deref()
        .and_then(timestamp_ms)
        .ok_or_else(|| SourceError::BadRequest(refused("Timestamp is not ISO 8601".into())))?;
    let age_ms = request.now_ms - sent_ms;
    if age_ms > sns.max_message_age_ms || -age_ms > MAX_FUTURE_SKEW_MS {
        return Err(SourceError::Unauthorized(refused(format!(
            "Timestamp {:?} is {}s from now, outside the {}s allowed (max_message_age)",
            envelope.timestamp.as_deref().unwrap_or_default(),
            age_ms / 1000,
            sns.max_message_age_ms / 1000
        ))));
    }

    if sns.verify_signatures {
        verify_signature(sns, &envelope, &text, request.now_ms)
            .await
            .map_err(|e| match e {
                Refusal::Unauthorized(m) => SourceError::Unauthorized(refused(m)),
                Refusal::Upstream(m) => SourceError::Upstream(refused(m)),
            })?;
    }

    if let Some(url) = subscribe_url {
        sns.fetcher.confirm(&url).await.map_err(|e| {
            SourceError::Upstream(refused(format!("subscription not confirmed: {e}")))
        })?;
        tracing::info!(source, topic, "SNS subscription confirmed");
    }
    Ok(())
}

enum Refusal {
    Unauthorized(String),
    Upstream(String),
}

async fn verify_signature(
    sns: &Sns,
    envelope: &Envelope,
    text: &str,
    now_ms: i64,
) -> Result<(), Refusal> {
    let version = envelope
        .signature_version
        .as_deref()
        .ok_or_else(|| Refusal::Unauthorized("message has no SignatureVersion".into()))?;
    let signature = envelope
        .signature
        .as_deref()
        .ok_or_else(|| Refusal::Unauthorized("message has no Signature".into()))?;
    let cert_url = envelope
        .signing_cert_url
        .as_deref()
        .ok_or_else(|| Refusal::Unauthorized("message has no SigningCertURL".into()))?;
    let cert_url = allowed_url(cert_url, &sns.hosts)
        .map_err(|e| Refusal::Unauthorized(format!("SigningCertURL {e}")))?;
    if !matches!(version, "1" | "2") {
        return Err(Refusal::Unauthorized(format!(
            "SignatureVersion {version:?} is not 1 or 2"
        )));
    }
    let key = sns
        .fetcher
        .signing_key(&cert_url)
        .await
        .map_err(|e: FetchError| Refusal::Upstream(format!("signing certificate: {e}")))?;
    let now_secs = now_ms.div_euclid(1000);
    if now_secs < key.not_before_secs || now_secs > key.not_after_secs {
        return Err(Refusal::Unauthorized(
            "the signing certificate is not valid at this time".into(),
        ));
    }
    check_signature(version, signature, text, &key.rsa_der).map_err(Refusal::Unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/aws/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn real_key() -> Vec<u8> {
        super::super::fetch::signing_key_from_pem(&sample(
            "sns_signing_cert_7ff5318490ec183fbaddaa2a969abfda.pem",
        ))
        .unwrap()
        .rsa_der
    }

    #[test]
    fn real_signatures_verify_over_the_canonical_string() {
        for (file, version) in [
            ("sns_notification_real_signed_sha1.json", "1"),
            ("sns_notification_real_signed_sha256.json", "2"),
        ] {
            let envelope = Envelope::from_body(&sample(file)).unwrap();
            assert_eq!(envelope.signature_version.as_deref(), Some(version));
            let text = envelope.string_to_sign().unwrap();
            assert!(
                text.starts_with("Message\nHello world\nMessageId\n"),
                "{text}"
            );
            assert!(text.ends_with("Type\nNotification\n"), "{text}");
            let signature = envelope.signature.as_deref().unwrap();
            assert_eq!(
                check_signature(version, signature, &text, &real_key()),
                Ok(())
            );

            // The other digest, a changed field, or another version all fail.
            let other = if version == "1" { "2" } else { "1" };
            assert!(check_signature(other, signature, &text, &real_key()).is_err());
            let changed = text.replace("Hello world", "Hello World");
            assert!(check_signature(version, signature, &changed, &real_key()).is_err());
            assert!(check_signature("3", signature, &text, &real_key()).is_err());
            let padded = format!("{signature}AA");
            assert!(check_signature(version, &padded, &text, &real_key()).is_err());
        }
    }

    #[test]
    fn canonical_strings_per_type() {
        let notification = Envelope::from_body(
            br#"{"Type":"Notification","MessageId":"m","TopicArn":"t","Subject":"s",
                "Message":"x","Timestamp":"ts","Ignored":"y"}"#,
        )
        .unwrap();
        assert_eq!(
            notification.string_to_sign().unwrap(),
            "Message\nx\nMessageId\nm\nSubject\ns\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
        );
        let null_subject = Envelope::from_body(
            br#"{"Type":"Notification","MessageId":"m","TopicArn":"t","Subject":null,
                "Message":"x","Timestamp":"ts"}"#,
        )
        .unwrap();
        assert!(!null_subject.string_to_sign().unwrap().contains("Subject"));

        let text = |name: &str| Envelope::from_body(&sample(name)).unwrap().string_to_sign();
        let real = text("sns_subscription_confirmation_real_eu_west_1.json").unwrap();
        let names: Vec<&str> = real.lines().step_by(2).collect();
        assert_eq!(
            names,
            [
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type"
            ]
        );
        let confirmation = text("sns_subscription_confirmation_docs.json").unwrap();
        // The message's own newline is kept as sent.
        assert!(confirmation.contains("MyTopic.\nTo confirm"));

        for bad in [
            &br#"{"Type":"Notification","MessageId":"m"}"#[..],
            br#"{"Type":"Other","MessageId":"m"}"#,
        ] {
            assert!(Envelope::from_body(bad).unwrap().string_to_sign().is_err());
        }
        let duplicated = br#"{"Type":"Notification","Message":"a","Message":"b"}"#;
        assert!(Envelope::from_body(duplicated).is_err());
        assert!(Envelope::from_body(br#"{"Type":"Notification","Message":7}"#).is_err());
    }

    #[test]
    fn host_patterns_take_one_label_per_star() {
        let default: Vec<HostPattern> = super::super::DEFAULT_HOSTS
            .iter()
            .map(|h| HostPattern::new(h).unwrap())
            .collect();
        let cert = "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-x.pem";
        assert!(allowed_url(cert, &default).is_ok());
        assert!(allowed_url("https://SNS.cn-north-1.amazonaws.com.cn/a.pem", &default).is_ok());
        for bad in [
            "http://sns.us-east-2.amazonaws.com/x.pem",
            "https://sns.us-east-2.amazonaws.com.evil.example/x.pem",
            "https://sns.a.b.amazonaws.com/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://user:pw@sns.us-east-2.amazonaws.com/x.pem",
            "https://sns.us-east-2.amazonaws.com:8443/x.pem",
            "https://192.0.2.1/x.pem",
            "not a url",
        ] {
            assert!(allowed_url(bad, &default).is_err(), "{bad}");
        }
        assert!(HostPattern::new("*").is_err());
        assert!(HostPattern::new("sns.*.amazonaws.com/").is_err());
    }

    #[test]
    fn topic_patterns() {
        let arn = "arn:aws:sns:us-east-1:123456789012:alerts";
        for (pattern, expected) in [
            (arn, true),
            ("arn:aws:sns:us-east-1:123456789012:alert", false),
            ("arn:aws:sns:*:123456789012:alerts", true),
            ("arn:aws:sns:*:123456789012:*", true),
            ("arn:aws:sns:*:999999999999:*", false),
            ("*", true),
            ("*:alerts", true),
            ("*:alerts:*", false),
            ("arn:aws:sns:us-east-1:123456789012:alerts*", true),
        ] {
            assert_eq!(topic_matches(pattern, arn), expected, "{pattern}");
        }
        assert!(!topic_matches("arn:*", ""));
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            timestamp_ms("2022-07-28T21:23:58.317Z"),
            Some(1_659_043_438_317)
        );
        assert_eq!(timestamp_ms("yesterday"), None);
    }
}
