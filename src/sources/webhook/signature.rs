//! Standard Webhooks signatures: HMAC-SHA256 over `<webhook-id>.<webhook-timestamp>.<body>`
//! with a `whsec_`-prefixed base64 secret, sent as space-separated `v1,<base64>` entries
//! in `webhook-signature` (several while a sender rotates its secret; any may match).
//!
//! This file checks one request; it does not remember ids. Redeliveries are caught by
//! the journal's dedup keys, which the parser derives from the body.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The longest `webhook-id` accepted; the specification's ids are short tokens.
const MAX_ID_BYTES: usize = 256;

/// A decoded signing secret. Debug output never shows it.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    /// Reads `whsec_<base64>` (the prefix may be left out, as some senders show the
    /// secret without it).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let encoded = text.strip_prefix("whsec_").unwrap_or(text);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "not whsec_ followed by base64".to_string())?;
        if key.len() < 16 {
            return Err(format!("{} bytes long; expected at least 16", key.len()));
        }
        Ok(Self(key))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `v1,<base64>` entry for a message; for tests and for documentation examples.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

/// Why a request does not verify. Messages go back to the sender, so they name what is
/// wrong and never the expected value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{ID_HEADER} header is longer than {MAX_ID_BYTES} bytes")]
    LongId,
    #[error("{TIMESTAMP_HEADER} {0:?} is not Unix seconds")]
    Timestamp(String),
    #[error("{TIMESTAMP_HEADER} is {0} s away from now, more than the {1} s allowed")]
    Stale(i64, i64),
    #[error("{SIGNATURE_HEADER} has no v1 entry")]
    NoV1,
    #[error("no v1 signature in {SIGNATURE_HEADER} matches the body")]
    Mismatch,
}

/// The three headers of a signed request, as text.
pub struct Signed<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

impl SigningSecret {
    /// Checks a request's headers and raw body at `now_s`, allowing `tolerance_s` of
    /// clock difference either way.
    pub fn verify(
        &self,
        signed: &Signed<'_>,
        body: &[u8],
        now_s: i64,
        tolerance_s: i64,
    ) -> Result<(), SignatureError> {
        let id = signed.id.ok_or(SignatureError::Missing(ID_HEADER))?.trim();
        let timestamp = signed
            .timestamp
            .ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?
            .trim();
        let signature = signed
            .signature
            .ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
        if id.is_empty() {
            return Err(SignatureError::Missing(ID_HEADER));
        }
        if id.len() > MAX_ID_BYTES {
            return Err(SignatureError::LongId);
        }
        let sent_s: i64 = timestamp
            .parse()
            .ok()
            .filter(|_| timestamp.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| SignatureError::Timestamp(timestamp.chars().take(20).collect()))?;
        let skew = now_s.saturating_sub(sent_s);
        if skew.unsigned_abs() > tolerance_s.unsigned_abs() {
            return Err(SignatureError::Stale(skew, tolerance_s));
        }

        let mut candidates = signature
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .peekable();
        if candidates.peek().is_none() {
            return Err(SignatureError::NoV1);
        }
        let mac = self.mac(id, timestamp, body);
        for candidate in candidates {
            // A malformed entry is one that does not match; another entry may.
            if let Ok(tag) = STANDARD.decode(candidate)
                && mac.clone().verify_slice(&tag).is_ok()
            {
                return Ok(());
            }
        }
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification's reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn signed<'a>(signature: &'a str, timestamp: &'a str) -> Signed<'a> {
        Signed {
            id: Some(ID),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    #[test]
    fn reference_vector_verifies() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY), EXPECTED);
        let now = 1_614_265_330;
        assert_eq!(
            secret.verify(&signed(EXPECTED, TIMESTAMP), BODY, now, 300),
            Ok(())
        );
        let rotated = format!("v1,bm90IHRoaXMgb25l v2,abc {EXPECTED}");
        assert_eq!(
            secret.verify(&signed(&rotated, TIMESTAMP), BODY, now, 300),
            Ok(())
        );
    }

    #[test]
    fn refusals_say_why() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let now = 1_614_265_330;
        let cases: [(Signed, &[u8], i64, SignatureError); 6] = [
            (
                signed(EXPECTED, TIMESTAMP),
                b"{\"test\": 2432232315}",
                now,
                SignatureError::Mismatch,
            ),
            (
                signed(EXPECTED, TIMESTAMP),
                BODY,
                now + 301,
                SignatureError::Stale(301, 300),
            ),
            (
                signed(EXPECTED, TIMESTAMP),
                BODY,
                now - 301,
                SignatureError::Stale(-301, 300),
            ),
            (
                signed(EXPECTED, "16142653x0"),
                BODY,
                now,
                SignatureError::Timestamp("16142653x0".into()),
            ),
            (signed("v2,abc", TIMESTAMP), BODY, now, SignatureError::NoV1),
            (
                Signed {
                    id: None,
                    ..signed(EXPECTED, TIMESTAMP)
                },
                BODY,
                now,
                SignatureError::Missing(ID_HEADER),
            ),
        ];
        for (headers, body, at, expected) in cases {
            assert_eq!(secret.verify(&headers, body, at, 300), Err(expected));
        }
        assert!(SigningSecret::parse("whsec_not base64!").is_err());
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err());
    }
}
