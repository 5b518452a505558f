//! Shared-secret checks for sources whose provider sends a fixed credential rather
//! than a signature: a bearer token, an API-key header, or HTTP basic auth.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Request, SourceError};
use crate::config::SourceSettings;

/// The credential settings a source may take, flattened into its own table.
#[derive(Debug, Default, Deserialize)]
pub struct RawAuth {
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Name of a header that must carry `api_key` (an EventBridge API destination's
    /// API-key authorization, say).
    pub api_key_header: Option<String>,
    pub api_key: Option<String>,
    /// HTTP basic auth.
    pub username: Option<String>,
    pub password: Option<String>,
}

/// One configured credential.
#[derive(Clone)]
pub enum Auth {
    Bearer([u8; 32]),
    Header { name: String, digest: [u8; 32] },
    Basic([u8; 32]),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Digests only, but still nothing anyone needs to see.
        f.write_str(match self {
            Auth::Bearer(_) => "Auth::Bearer(..)",
            Auth::Header { .. } => "Auth::Header(..)",
            Auth::Basic(_) => "Auth::Basic(..)",
        })
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares digests, so that the time taken says nothing about the secret.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// A bearer-token check for `token`.
    pub fn bearer(token: &str) -> Auth {
        Auth::Bearer(digest(token.as_bytes()))
    }

    /// Reads the credential settings; `Ok(None)` when none is set. Reports a half-set
    /// credential (a header name without a key) through `settings`.
    pub fn configure(settings: &mut SourceSettings<'_>, raw: RawAuth) -> Option<Auth> {
        let token = settings.secret("token", raw.token);
        let header = raw.api_key_header.filter(|h| !h.trim().is_empty());
        let key = settings.secret("api_key", raw.api_key);
        let username = settings.secret("username", raw.username);
        let password = settings.secret("password", raw.password);
        let mut found = Vec::new();
        if let Some(token) = token {
            found.push(Auth::Bearer(digest(token.as_bytes())));
        }
        match (header, key) {
            (Some(name), Some(key)) => {
                match axum::http::HeaderName::from_bytes(name.trim().as_bytes()) {
                    Ok(name) => found.push(Auth::Header {
                        name: name.as_str().to_string(),
                        digest: digest(key.as_bytes()),
                    }),
                    Err(_) => settings.error(
                        "api_key_header",
                        format!("expected an HTTP header name, found {name:?}"),
                    ),
                }
            }
            (None, None) => {}
            (Some(_), None) => settings.error("api_key", "expected a key for api_key_header"),
            (None, Some(_)) => settings.error(
                "api_key_header",
                "expected the header name that carries api_key",
            ),
        }
        match (username, password) {
            (Some(user), Some(password)) => {
                found.push(Auth::Basic(digest(format!("{user}:{password}").as_bytes())));
            }
            (None, None) => {}
            _ => settings.error("password", "expected both username and password"),
        }
        if found.len() > 1 {
            settings.error(
                "token",
                "expected one of token, api_key_header with api_key, or username with password",
            );
        }
        found.pop()
    }

    /// Checks the request carries the credential.
    pub fn check(&self, source: &str, request: &Request<'_>) -> Result<(), SourceError> {
        self.check_headers(request.headers)
            .map_err(|what| SourceError::Unauthorized(format!("source {source:?}: {what}")))
    }

    /// Checks `headers` carry the credential; the error says what is wrong.
    pub fn check_headers(&self, headers: &axum::http::HeaderMap) -> Result<(), String> {
        let request = Request {
            headers,
            body: b"",
            now_ms: 0,
            peer: None,
        };
        let refused = |what: &str| what.to_string();
        match self {
            Auth::Bearer(expected) => {
                let value = request
                    .header("authorization")
                    .ok_or_else(|| refused("missing Authorization: Bearer header"))?;
                let token = strip_scheme(value, "bearer")
                    .ok_or_else(|| refused("expected Authorization: Bearer <token>"))?;
                if !same(&digest(token.as_bytes()), expected) {
                    return Err(refused("wrong bearer token"));
                }
            }
            Auth::Header {
                name,
                digest: expected,
            } => {
                let value = request
                    .header(name)
                    .ok_or_else(|| refused(&format!("missing {name} header")))?;
                if !same(&digest(value.trim().as_bytes()), expected) {
                    return Err(refused(&format!("wrong {name} header")));
                }
            }
            Auth::Basic(expected) => {
                let value = request
                    .header("authorization")
                    .ok_or_else(|| refused("missing Authorization: Basic header"))?;
                let encoded = strip_scheme(value, "basic")
                    .ok_or_else(|| refused("expected Authorization: Basic <credentials>"))?;
                let decoded = STANDARD
                    .decode(encoded)
                    .map_err(|_| refused("Authorization: Basic is not base64"))?;
                if !same(&digest(&decoded), expected) {
                    return Err(refused("wrong username or password"));
                }
            }
        }
        Ok(())
    }
}

/// `value` without its auth scheme (compared case-insensitively), trimmed.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (found, rest) = value.trim().split_once(' ')?;
    found.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn request(headers: &HeaderMap) -> Request<'_> {
        Request {
            headers,
            body: b"",
            now_ms: 0,
            peer: None,
        }
    }

    #[test]
    fn each_credential_kind_is_checked() {
        let bearer = Auth::Bearer(digest(b"s3cret"));
        let mut headers = HeaderMap::new();
        assert!(bearer.check("x", &request(&headers)).is_err());
        headers.insert("authorization", "bearer s3cret".parse().unwrap());
        assert!(bearer.check("x", &request(&headers)).is_ok());
        headers.insert("authorization", "Bearer s3cre".parse().unwrap());
        assert!(bearer.check("x", &request(&headers)).is_err());

        let basic = Auth::Basic(digest(b"aws:pw"));
        headers.insert("authorization", "Basic YXdzOnB3".parse().unwrap());
        assert!(basic.check("x", &request(&headers)).is_ok());
        headers.insert("authorization", "Basic YXdzOnB4".parse().unwrap());
        assert!(basic.check("x", &request(&headers)).is_err());

        let header = Auth::Header {
            name: "x-api-key".into(),
            digest: digest(b"k"),
        };
        headers.insert("x-api-key", "k".parse().unwrap());
        assert!(header.check("x", &request(&headers)).is_ok());
        headers.insert("x-api-key", "kk".parse().unwrap());
        assert!(header.check("x", &request(&headers)).is_err());
    }
}
