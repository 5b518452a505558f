//! The checks a mapping source can make before parsing: an HMAC of the raw body in a
//! header (the Stripe-like and GitHub-like schemes), or Mailgun's signature, which
//! Mailgun puts inside the body and which covers only a timestamp and a token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Sha256, Sha512};

/// How the header's signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

/// An HMAC over the raw body, sent in one header. Debug output never shows the secret.
#[derive(Clone)]
pub struct HeaderHmac {
    /// Lowercase header name.
    pub header: String,
    pub secret: Vec<u8>,
    pub encoding: Encoding,
    pub algorithm: Algorithm,
    /// Text before the signature, such as `sha256=`.
    pub prefix: String,
}

impl std::fmt::Debug for HeaderHmac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderHmac")
            .field("header", &self.header)
            .field("encoding", &self.encoding)
            .field("algorithm", &self.algorithm)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Whether `tag` is the HMAC of `parts` under `key`, compared in constant time.
fn hmac_matches(algorithm: Algorithm, key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    match algorithm {
        Algorithm::Sha256 => {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
            parts.iter().for_each(|p| mac.update(p));
            mac.verify_slice(tag).is_ok()
        }
        Algorithm::Sha512 => {
            let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("any key length");
            parts.iter().for_each(|p| mac.update(p));
            mac.verify_slice(tag).is_ok()
        }
    }
}

fn decode(encoding: Encoding, text: &str) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Hex => hex::decode(text).ok(),
        Encoding::Base64 => STANDARD.decode(text).ok(),
    }
}

impl HeaderHmac {
    /// Checks the header value against the raw body; the error says what is wrong.
    pub fn verify(&self, value: Option<&str>, body: &[u8]) -> Result<(), String> {
        let header = &self.header;
        let value = value
            .ok_or_else(|| format!("missing {header} header"))?
            .trim();
        let signature = value
            .strip_prefix(self.prefix.as_str())
            .ok_or_else(|| format!("{header} does not start with {:?}", self.prefix))?;
        let tag = decode(self.encoding, signature.trim()).ok_or_else(|| {
            let written = match self.encoding {
                Encoding::Hex => "hex",
                Encoding::Base64 => "base64",
            };
            format!("{header} is not {written}")
        })?;
        if hmac_matches(self.algorithm, &self.secret, &[body], &tag) {
            Ok(())
        } else {
            Err(format!("{header} does not match the body"))
        }
    }

    /// The header value for `body`; for tests and examples.
    pub fn sign(&self, body: &[u8]) -> String {
        let tag = match self.algorithm {
            Algorithm::Sha256 => {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).unwrap();
                mac.update(body);
                mac.finalize().into_bytes().to_vec()
            }
            Algorithm::Sha512 => {
                let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(&self.secret).unwrap();
                mac.update(body);
                mac.finalize().into_bytes().to_vec()
            }
        };
        let text = match self.encoding {
            Encoding::Hex => hex::encode(tag),
            Encoding::Base64 => STANDARD.encode(tag),
        };
        format!("{}{text}", self.prefix)
    }
}

/// Mailgun's webhook signature: HMAC-SHA256, keyed with the webhook signing key, of
/// `timestamp` followed by `token`, in hex, all three in the body's `signature` object.
/// It proves Mailgun made the token, not that the rest of the body is Mailgun's: a
/// signature block copied from one delivery verifies on any body. `max_age_secs`
/// narrows how long a copied block is useful.
#[derive(Clone)]
pub struct MailgunSignature {
    pub signing_key: Vec<u8>,
    pub max_age_secs: Option<i64>,
}

impl std::fmt::Debug for MailgunSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailgunSignature")
            .field("max_age_secs", &self.max_age_secs)
            .finish_non_exhaustive()
    }
}

impl MailgunSignature {
    pub fn verify(&self, body: &[u8], now_s: i64) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct Body {
            signature: Option<Value>,
        }
        let body: Body = serde_json::from_slice(body)
            .map_err(|_| "body is not a JSON object with a Mailgun signature".to_string())?;
        let block = body.signature.ok_or("missing \"signature\" object")?;
        let field = |name: &str| -> Result<String, String> {
            match block.get(name) {
                Some(Value::String(text)) => Ok(text.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                _ => Err(format!("missing \"signature\".{name:?}")),
            }
        };
        let (timestamp, token, signature) =
            (field("timestamp")?, field("token")?, field("signature")?);
        let tag = hex::decode(signature.trim()).map_err(|_| "signature is not hex".to_string())?;
        if !hmac_matches(
            Algorithm::Sha256,
            &self.signing_key,
            &[timestamp.as_bytes(), token.as_bytes()],
            &tag,
        ) {
            return Err("Mailgun signature does not match its timestamp and token".into());
        }
        if let Some(max_age) = self.max_age_secs {
            let sent: i64 = timestamp
                .trim()
                .parse()
                .map_err(|_| "signature timestamp is not Unix seconds".to_string())?;
            let age = now_s.saturating_sub(sent);
            if age.unsigned_abs() > max_age.unsigned_abs() {
                return Err(format!(
                    "signature timestamp is {age} s away from now, more than the {max_age} s \
                     allowed"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_hmac_in_hex_and_base64_with_prefixes() {
        let mut check = HeaderHmac {
            header: "x-hub-signature-256".into(),
            secret: b"It's a Secret to Everybody".to_vec(),
            encoding: Encoding::Hex,
            algorithm: Algorithm::Sha256,
            prefix: "sha256=".into(),
        };
        // The worked example of GitHub's webhook documentation.
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(check.sign(b"Hello, World!"), expected);
        assert_eq!(check.verify(Some(expected), b"Hello, World!"), Ok(()));
        assert!(check.verify(Some(expected), b"Hello, World?").is_err());
        assert!(
            check
                .verify(Some(&expected[7..]), b"Hello, World!")
                .is_err()
        );
        assert!(check.verify(Some("sha256=zz"), b"Hello, World!").is_err());
        assert!(check.verify(None, b"Hello, World!").is_err());

        check.encoding = Encoding::Base64;
        check.algorithm = Algorithm::Sha512;
        check.prefix.clear();
        let signed = check.sign(b"{}");
        assert_eq!(check.verify(Some(&signed), b"{}"), Ok(()));
        assert!(check.verify(Some(&signed), b"{ }").is_err());
    }

    #[test]
    fn mailgun_signature_covers_timestamp_and_token() {
        let check = MailgunSignature {
            signing_key: b"key".to_vec(),
            max_age_secs: Some(300),
        };
        let tag = {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"key").unwrap();
            mac.update(b"1700000000abc");
            hex::encode(mac.finalize().into_bytes())
        };
        let body = format!(
            r#"{{"signature":{{"timestamp":"1700000000","token":"abc","signature":"{tag}"}}}}"#
        );
        assert_eq!(check.verify(body.as_bytes(), 1_700_000_100), Ok(()));
        assert!(
            check
                .verify(body.as_bytes(), 1_700_000_301)
                .unwrap_err()
                .contains("301 s")
        );
        let forged = body.replace("\"abc\"", "\"abd\"");
        assert!(check.verify(forged.as_bytes(), 1_700_000_000).is_err());
        assert!(check.verify(b"{}", 0).is_err());
        assert!(check.verify(b"[", 0).is_err());
    }
}
