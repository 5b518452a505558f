//! Label values from what browsers put in reports: the blocked resource as a host or a
//! keyword, the directive, the document's host and a path pattern.
//!
//! Every function here bounds its output: a label is something rules group by, so a
//! value that could differ per visitor (a query string, an id in a path, an extension's
//! id) is reduced to what stays the same across visitors. The full values stay in the
//! event's raw JSON.

use url::Url;

/// Longest label value kept; longer values are cut.
const MAX_LABEL_CHARS: usize = 100;

/// Most path segments a path pattern keeps; deeper paths end in `/…`.
const MAX_PATH_SEGMENTS: usize = 6;

/// Keywords browsers send in place of a URL (`blocked-uri: "inline"`), and pseudo
/// schemes that some send alone (`"chrome-extension"`, `"android-webview"`).
fn is_keyword(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What was blocked, for the `blocked` label: the host (with a port that is not the
/// scheme's default) of a web URL, the scheme of any other URL (`data`, `blob`,
/// `chrome-extension`), the keyword itself for `inline`, `eval`, `self`, `wasm-eval`
/// and the like, `empty` when the browser sent nothing, and `other` for anything else.
pub fn blocked(value: Option<&str>) -> String {
    let Some(value) = value.map(str::trim) else {
        return "empty".into();
    };
    if value.is_empty() {
        return "empty".into();
    }
    let lower = value.to_ascii_lowercase();
    if is_keyword(&lower) {
        return lower;
    }
    match Url::parse(value) {
        Ok(url) => match url.scheme() {
            "http" | "https" | "ws" | "wss" | "ftp" => host_of(&url).unwrap_or("other".into()),
            scheme => bounded(scheme),
        },
        // Old browsers sent a bare host ("cdn.example.net") for a blocked origin.
        Err(_) if lower.contains('.') && !lower.contains(char::is_whitespace) => {
            Url::parse(&format!("http://{lower}"))
                .ok()
                .and_then(|url| host_of(&url))
                .unwrap_or("other".into())
        }
        Err(_) => "other".into(),
    }
}

/// The directive that was violated: the effective directive when the browser names one,
/// else the first token of the violated directive (Firefox and Safari send the whole
/// source list there, and older ones send no effective directive at all).
pub fn directive(effective: Option<&str>, violated: Option<&str>) -> String {
    let first_token = |text: Option<&str>| {
        text.and_then(|t| t.split_ascii_whitespace().next())
            .map(str::to_ascii_lowercase)
    };
    let name = first_token(effective).or_else(|| first_token(violated));
    match name {
        None => "unknown".into(),
        Some(name) if is_keyword(&name) => name,
        Some(_) => "other".into(),
    }
}

/// `enforce` or `report`; `unknown` when the browser does not say (older ones).
pub fn disposition(value: Option<&str>) -> &'static str {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Some("enforce") => "enforce",
        Some("report") => "report",
        _ => "unknown",
    }
}

/// The host label and path pattern of a document (or request) URL. A URL without a host
/// (`about:blank`, `data:`) gives its scheme for both; text that is no URL at all (some
/// browsers anonymise it) gives `unknown`.
pub fn host_and_path(value: Option<&str>) -> (String, String) {
    let Some(url) = value.and_then(|v| Url::parse(v.trim()).ok()) else {
        return ("unknown".into(), "unknown".into());
    };
    match host_of(&url) {
        Some(host) => (host, path_pattern(&url)),
        None => {
            let scheme = bounded(url.scheme());
            (scheme.clone(), scheme)
        }
    }
}

/// The origin a URL belongs to, as `scheme://host[:port]`, for the allow-list; `None`
/// for opaque origins and text that is no URL.
pub fn origin(value: &str) -> Option<String> {
    let url = Url::parse(value.trim()).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

fn host_of(url: &Url) -> Option<String> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    Some(match url.port() {
        Some(port) => bounded(&format!("{host}:{port}")),
        None => bounded(&host),
    })
}

/// The path with each segment that looks like an id or a hash replaced by `:id`, and
/// no query or fragment.
fn path_pattern(url: &Url) -> String {
    let Some(segments) = url.path_segments() else {
        return "/".into();
    };
    let mut pattern = String::new();
    for (index, segment) in segments.enumerate() {
        if index == MAX_PATH_SEGMENTS {
            pattern.push_str("/…");
            break;
        }
        pattern.push('/');
        if looks_like_id(segment) {
            pattern.push_str(":id");
        } else {
            pattern.push_str(segment);
        }
    }
    if pattern.is_empty() {
        pattern.push('/');
    }
    bounded(&pattern)
}

/// Numbers, UUIDs, hex digests, tokens and numbered slugs ("1301-some-article"): any
/// segment with three digits or more, an `@`, or longer than 40 characters. Such
/// segments differ per record, so keeping them would give every page its own group.
fn looks_like_id(segment: &str) -> bool {
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    digits >= 3 || segment.contains('@') || segment.len() > 40
}

/// `text` cut to the label limit, on a character boundary.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_LABEL_CHARS) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_values_browsers_send() {
        let cases = [
            (Some("inline"), "inline"),
            (Some("eval"), "eval"),
            (Some("self"), "self"),
            (Some("wasm-eval"), "wasm-eval"),
            (Some("data"), "data"),
            (Some("blob"), "blob"),
            (Some(""), "empty"),
            (None, "empty"),
            (Some("chrome-extension"), "chrome-extension"),
            (Some("android-webview"), "android-webview"),
            (Some("opera://js-inject"), "opera"),
            (
                Some("moz-extension://3f7a5c1e-1111-2222-3333-444455556666/x.js"),
                "moz-extension",
            ),
            (Some("data:image/png;base64,AAAA"), "data"),
            (Some("blob:https://app.example.com/1234"), "blob"),
            (
                Some("https://cdn.example.net/x.js?v=123"),
                "cdn.example.net",
            ),
            (
                Some("http://baddomain.com/test.js?_=1515535030116"),
                "baddomain.com",
            ),
            (
                Some("https://CDN.Example.NET:8443/a"),
                "cdn.example.net:8443",
            ),
            (
                Some("http://raw.githubusercontent.com"),
                "raw.githubusercontent.com",
            ),
            (
                Some("raw.githubusercontent.com"),
                "raw.githubusercontent.com",
            ),
            (Some("Inline"), "inline"),
            (Some("not a url at all"), "other"),
        ];
        for (input, expected) in cases {
            assert_eq!(blocked(input), expected, "{input:?}");
        }
    }

    #[test]
    fn directive_falls_back_to_the_violated_one() {
        assert_eq!(
            directive(Some("script-src-elem"), Some("x")),
            "script-src-elem"
        );
        assert_eq!(
            directive(None, Some("script-src https://app.example.com")),
            "script-src"
        );
        assert_eq!(
            directive(Some(""), Some("img-src 'self' data: ")),
            "img-src"
        );
        assert_eq!(directive(None, Some("font-src")), "font-src");
        assert_eq!(directive(None, None), "unknown");
        assert_eq!(directive(Some("Script-Src"), None), "script-src");
        assert_eq!(directive(Some("<script>"), None), "other");
    }

    #[test]
    fn documents_become_host_and_path_pattern() {
        let cases = [
            (
                "https://sentry.io/sentry/csp/issues/88513416/",
                ("sentry.io", "/sentry/csp/issues/:id/"),
            ),
            (
                "http://203.0.113.45:8123/csp?os=OS%20X&device=",
                ("203.0.113.45:8123", "/csp"),
            ),
            (
                "https://www.example.net/source/1301-Balise-video-Ogg-Theora-Mp4-et-HTML5.html",
                ("www.example.net", "/source/:id"),
            ),
            (
                "https://app.example.com/users/3f2b1c9e-0d4a-4c5b-9e8f-123456789abc/edit#x",
                ("app.example.com", "/users/:id/edit"),
            ),
            ("https://example.com", ("example.com", "/")),
            ("https://example.com:443/a", ("example.com", "/a")),
            (
                "https://example.com/a/b/c/d/e/f/g/h",
                ("example.com", "/a/b/c/d/e/f/…"),
            ),
            ("about:blank", ("about", "about")),
            ("[Anonymised]", ("unknown", "unknown")),
        ];
        for (input, (host, path)) in cases {
            assert_eq!(
                host_and_path(Some(input)),
                (host.to_string(), path.to_string()),
                "{input}"
            );
        }
        assert_eq!(host_and_path(None).0, "unknown");
    }

    #[test]
    fn origins_of_documents() {
        assert_eq!(
            origin("https://App.Example.com/login?x=1").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin("about:blank"), None);
        assert_eq!(origin("[Anonymised]"), None);
    }

    #[test]
    fn labels_stay_short() {
        let long = format!("https://{}.example.com/", "a".repeat(300));
        assert!(blocked(Some(&long)).chars().count() <= MAX_LABEL_CHARS);
        let (host, path) = host_and_path(Some(&format!("https://x.example/{}", "b".repeat(30))));
        assert_eq!(host, "x.example");
        assert_eq!(path.len(), 31);
    }
}
