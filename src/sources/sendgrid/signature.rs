//! SendGrid's Signed Event Webhook: ECDSA P-256 over the timestamp header followed by the
//! raw request body.
//!
//! Only this file knows the key format SendGrid shows (base64 DER SubjectPublicKeyInfo)
//! and the two header names. It checks bytes; parsing the body is left to `parse.rs`,
//! which runs only after this check has passed, on the same buffer.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

/// Header carrying the base64 DER ECDSA signature.
pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
/// Header carrying the signing time in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// DER prefix of a SubjectPublicKeyInfo holding an uncompressed P-256 point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A verification key as configured for one SendGrid source.
#[derive(Clone)]
pub struct VerificationKey {
    point: Vec<u8>,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerificationKey(..)")
    }
}

/// Why a request failed verification. Messages are safe to return to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("timestamp {0:?} is not a number of seconds")]
    BadTimestamp(String),
    #[error(
        "timestamp {timestamp} is {skew_secs}s away from now, \
         more than the {max_skew_secs}s allowed"
    )]
    Stale {
        timestamp: i64,
        skew_secs: i64,
        max_skew_secs: i64,
    },
    #[error("signature is not strict base64")]
    BadEncoding,
    #[error("signature does not verify")]
    Mismatch,
}

impl VerificationKey {
    /// Parses the key exactly as SendGrid's settings page shows it.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        if text.contains("-----BEGIN") {
            return Err("a PEM block; paste only the base64 line SendGrid shows".into());
        }
        let der = STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not base64 ({e})"))?;
        if der.len() != P256_SPKI_PREFIX.len() + 65
            || der[..P256_SPKI_PREFIX.len()] != P256_SPKI_PREFIX
        {
            return Err("not a P-256 SubjectPublicKeyInfo (expected 91 DER bytes)".into());
        }
        let point = der[P256_SPKI_PREFIX.len()..].to_vec();
        Ok(Self { point })
    }

    /// Verifies `signature` over `timestamp` followed by `body`, and that `timestamp` is
    /// within `max_skew_secs` of `now_secs`.
    pub fn verify(
        &self,
        signature: Option<&[u8]>,
        timestamp: Option<&[u8]>,
        body: &[u8],
        now_secs: i64,
        max_skew_secs: i64,
    ) -> Result<(), SignatureError> {
        let signature = signature.ok_or(SignatureError::MissingHeader(SIGNATURE_HEADER))?;
        let timestamp = timestamp.ok_or(SignatureError::MissingHeader(TIMESTAMP_HEADER))?;
        let ts_text = std::str::from_utf8(timestamp)
            .map_err(|_| SignatureError::BadTimestamp(String::from_utf8_lossy(timestamp).into()))?;
        let ts: i64 = ts_text
            .parse()
            .map_err(|_| SignatureError::BadTimestamp(ts_text.to_string()))?;
        let signature = STANDARD
            .decode(signature)
            .map_err(|_| SignatureError::BadEncoding)?;

        let mut message = Vec::with_capacity(timestamp.len() + body.len());
        message.extend_from_slice(timestamp);
        message.extend_from_slice(body);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(&message, &signature)
            .map_err(|_| SignatureError::Mismatch)?;

        let skew_secs = (now_secs - ts).abs();
        if skew_secs > max_skew_secs {
            return Err(SignatureError::Stale {
                timestamp: ts,
                skew_secs,
                max_skew_secs,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        public_key: String,
        payload: String,
        signature: String,
        timestamp: String,
        expected_valid: bool,
        description: String,
    }

    /// Every published SDK vector: verified at its own signing time.
    #[test]
    fn sdk_vectors() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sendgrid/signed_event_webhook"
        );
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("sendgrid fixtures in tests/fixtures") {
            let path = entry.unwrap().path();
            let v: Vector = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let key = VerificationKey::from_base64(&v.public_key).unwrap();
            let result = key.verify(
                Some(v.signature.as_bytes()),
                Some(v.timestamp.as_bytes()),
                v.payload.as_bytes(),
                1_600_112_502,
                300,
            );
            assert_eq!(
                result.is_ok(),
                v.expected_valid,
                "{}: {result:?}",
                v.description
            );
            seen += 1;
        }
        assert_eq!(seen, 6);
    }

    #[test]
    fn rejects_stale_and_trailing_garbage() {
        let v: Vector = serde_json::from_slice(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/sendgrid/signed_event_webhook/valid_single_dropped.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let key = VerificationKey::from_base64(&v.public_key).unwrap();
        let stale = key.verify(
            Some(v.signature.as_bytes()),
            Some(v.timestamp.as_bytes()),
            v.payload.as_bytes(),
            1_600_112_502 + 301,
            300,
        );
        assert!(matches!(
            stale,
            Err(SignatureError::Stale { skew_secs: 301, .. })
        ));
        let garbage = format!("{}AA", v.signature);
        let result = key.verify(
            Some(garbage.as_bytes()),
            Some(v.timestamp.as_bytes()),
            v.payload.as_bytes(),
            1_600_112_502,
            300,
        );
        assert_eq!(result, Err(SignatureError::BadEncoding));
    }

    #[test]
    fn key_must_be_p256_spki() {
        assert!(VerificationKey::from_base64("not base64!").is_err());
        assert!(VerificationKey::from_base64("AAAA").is_err());
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----";
        assert!(
            VerificationKey::from_base64(pem)
                .unwrap_err()
                .contains("PEM")
        );
    }
}
