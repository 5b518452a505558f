//! The pages a browser-reports source takes reports for. Browsers post reports without
//! credentials, so anyone can post one; the allow-list keeps reports about other
//! people's pages (or made-up ones) out of the rules, and answers CORS preflights.

use url::Url;

/// One entry of `allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`: any page, and any origin in a preflight.
    Any,
    /// `https://app.example.com`: that origin exactly (scheme, host and port).
    Exact(String),
    /// `https://*.example.com`: any subdomain of `example.com` under that scheme and
    /// port; not `example.com` itself.
    Subdomains {
        scheme: String,
        suffix: String,
        port: Option<u16>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<Pattern>);

impl AllowedOrigins {
    /// Reads the configured entries; the error names the first entry that is not an
    /// origin.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut patterns = Vec::with_capacity(entries.len());
        for entry in entries {
            patterns.push(pattern(entry.trim()).ok_or_else(|| {
                format!(
                    "expected origins such as \"https://app.example.com\", \
                     \"https://*.example.com\" or \"*\", found {entry:?}"
                )
            })?);
        }
        Ok(Self(patterns))
    }

    /// Whether reports about the page at `document_url` are taken.
    pub fn allows_document(&self, document_url: Option<&str>) -> bool {
        if self.0.contains(&Pattern::Any) {
            return true;
        }
        document_url
            .and_then(super::normalise::origin)
            .is_some_and(|origin| self.allows_origin(&origin))
    }

    /// Whether `origin` (as an `Origin` header gives it) is allowed.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let Ok(url) = Url::parse(origin.trim()) else {
            return self.0.contains(&Pattern::Any);
        };
        let serialised = url.origin().ascii_serialization();
        self.0.iter().any(|pattern| match pattern {
            Pattern::Any => true,
            Pattern::Exact(exact) => *exact == serialised,
            Pattern::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                url.scheme() == scheme
                    && url.port() == *port
                    && url.host_str().is_some_and(|host| {
                        host.len() > suffix.len() + 1
                            && host.ends_with(suffix.as_str())
                            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    })
            }
        })
    }

    /// Whether any origin is allowed, for the `Access-Control-Allow-Origin: *` answer.
    pub fn is_any(&self) -> bool {
        self.0.contains(&Pattern::Any)
    }
}

fn pattern(entry: &str) -> Option<Pattern> {
    if entry == "*" {
        return Some(Pattern::Any);
    }
    let (scheme, rest) = entry.split_once("://")?;
    if let Some(wildcard_rest) = rest.strip_prefix("*.") {
        // Parse the rest as an origin of its own, so ports and case are read the same
        // way as for an exact entry.
        let url = Url::parse(&format!("{scheme}://{wildcard_rest}")).ok()?;
        let suffix = url.host_str()?.to_string();
        if !is_bare_origin(&url) || !suffix.contains('.') {
            return None;
        }
        return Some(Pattern::Subdomains {
            scheme: url.scheme().to_string(),
            suffix,
            port: url.port(),
        });
    }
    let url = Url::parse(entry).ok()?;
    if !is_bare_origin(&url) || !url.origin().is_tuple() {
        return None;
    }
    Some(Pattern::Exact(url.origin().ascii_serialization()))
}

/// An origin as written: scheme and host, maybe a port, and nothing after them.
fn is_bare_origin(url: &Url) -> bool {
    url.host_str().is_some()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedOrigins {
        AllowedOrigins::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_and_wildcard_entries() {
        let list = allowed(&["https://app.example.com", "https://*.example.org"]);
        assert!(list.allows_document(Some("https://app.example.com/login?x=1")));
        assert!(list.allows_document(Some("https://APP.example.com:443/")));
        assert!(!list.allows_document(Some("http://app.example.com/")));
        assert!(!list.allows_document(Some("https://app.example.com:8443/")));
        assert!(!list.allows_document(Some("https://evil.example.com/")));
        assert!(list.allows_document(Some("https://a.b.example.org/x")));
        assert!(!list.allows_document(Some("https://example.org/")));
        assert!(!list.allows_document(Some("https://badexample.org/")));
        assert!(!list.allows_document(Some("[Anonymised]")));
        assert!(!list.allows_document(None));
        assert!(list.allows_origin("https://app.example.com"));
        assert!(!list.allows_origin("null"));
        assert!(!list.is_any());
    }

    #[test]
    fn any_takes_everything() {
        let list = allowed(&["*"]);
        assert!(list.allows_document(Some("[Anonymised]")));
        assert!(list.allows_document(None));
        assert!(list.allows_origin("null"));
        assert!(list.is_any());
    }

    #[test]
    fn entries_that_are_not_origins_are_refused() {
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "https://app.example.com/?q",
            "https://*.com",
            "https://user@app.example.com",
            "",
        ] {
            assert!(
                AllowedOrigins::parse(&[bad.to_string()]).is_err(),
                "{bad:?}"
            );
        }
        assert!(AllowedOrigins::parse(&["http://127.0.0.1:8080".into()]).is_ok());
        assert!(AllowedOrigins::parse(&["https://app.example.com/".into()]).is_ok());
    }
}
