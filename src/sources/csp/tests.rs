//! The parser over every sample, the field cases B08 and B09, and bad input.

use std::sync::Arc;

use serde_json::Value;

use super::origins::AllowedOrigins;
use super::parse::parse_body;
use crate::sources::{ParsedBatch, ParsedEvent, SourceError};

const RECEIVED_MS: i64 = 1_700_000_000_500;

fn any() -> AllowedOrigins {
    AllowedOrigins::parse(&["*".to_string()]).unwrap()
}

fn only(origins: &[&str]) -> AllowedOrigins {
    AllowedOrigins::parse(&origins.iter().map(|o| o.to_string()).collect::<Vec<_>>()).unwrap()
}

fn parse_with(allowed: &AllowedOrigins, body: &[u8], received_ms: i64) -> ParsedBatch {
    parse_body(&Arc::from("csp"), allowed, body, received_ms)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

fn parse(body: &[u8]) -> ParsedBatch {
    parse_with(&any(), body, RECEIVED_MS)
}

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/csp/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A field case's input (`tests/fixtures/csp/cases/`).
fn case(name: &str) -> String {
    String::from_utf8(sample(&format!("cases/{name}"))).unwrap()
}

/// Kind, time and labels of an event as one line: `kind @time label=value ...`.
fn summary(event: &ParsedEvent) -> String {
    let labels: Vec<String> = event
        .event
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{} @{} {}",
        event.event.kind,
        RECEIVED_MS - event.event.time_ms,
        labels.join(" ")
    )
}

fn raw_json(event: &ParsedEvent) -> Value {
    serde_json::from_str(&event.event.raw).unwrap()
}

#[test]
fn every_sample_gives_its_event() {
    // (file, the one event: kind, how long before arrival it happened, labels)
    let cases = [
        (
            "mdn_report_to_single_report_object.json",
            "csp.violation @53531 blocked=inline directive=script-src-elem \
             disposition=enforce host=example.com path=/csp-report",
        ),
        (
            "mdn_report_uri_legacy_csp_report.json",
            "csp.violation @0 blocked=example.com directive=style-src-elem \
             disposition=report host=example.com path=/signup.html",
        ),
        (
            "nel_network_error_http_400.json",
            "browser.network_error @20 error=http.error host=example.com \
             path=/bad-request phase=application status=400",
        ),
        (
            "relay_sentry_io_chrome_real_report.json",
            "csp.violation @0 blocked=baddomain.com directive=script-src \
             disposition=enforce host=sentry.io path=/sentry/csp/issues/:id/",
        ),
        (
            "reporting_api_deprecation.json",
            "browser.deprecation @32 feature=websql host=example.com path=/",
        ),
        (
            "reporting_api_intervention.json",
            "browser.intervention @27 feature=audio-no-gesture host=example.com path=/",
        ),
        (
            "tollmanz_chrome40_effective_directive.json",
            "csp.violation @0 blocked=raw.githubusercontent.com directive=script-src \
             disposition=unknown host=203.0.113.45:8123 path=/csp",
        ),
        (
            "tollmanz_firefox32_no_original_policy.json",
            "csp.violation @0 blocked=farm8.staticflickr.com directive=img-src \
             disposition=unknown host=203.0.113.45:8123 path=/csp",
        ),
        (
            "tollmanz_safari61_empty_blocked_uri.json",
            "csp.violation @0 blocked=empty directive=script-src \
             disposition=unknown host=203.0.113.45:8123 path=/csp",
        ),
        (
            "wtf_android_webview_pseudo_scheme.json",
            "csp.violation @0 blocked=android-webview directive=img-src \
             disposition=unknown host=www.example.net path=/source/:id",
        ),
        (
            "wtf_chrome_extension_scheme_only.json",
            "csp.violation @0 blocked=chrome-extension directive=font-src \
             disposition=unknown host=van11y.net path=/accessible-simple-tooltip/",
        ),
        (
            "wtf_facebook_inapp_eval.json",
            "csp.violation @0 blocked=eval directive=script-src \
             disposition=unknown host=van11y.net path=/fr/news",
        ),
        (
            "wtf_opera_mini_js_inject.json",
            "csp.violation @0 blocked=opera directive=script-src \
             disposition=unknown host=unknown path=unknown",
        ),
    ];
    for (file, expected) in cases {
        let batch = parse(&sample(file));
        assert!(batch.skipped.is_empty(), "{file}: {:?}", batch.skipped);
        assert!(batch.warnings.is_empty(), "{file}: {:?}", batch.warnings);
        let found: Vec<String> = batch.events.iter().map(summary).collect();
        let expected = expected.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(found, vec![expected], "{file}");
        assert!(batch.events[0].keys.is_some(), "{file}");
    }
}

#[test]
fn samples_keep_their_details_in_raw() {
    let sentry = parse(&sample("relay_sentry_io_chrome_real_report.json"));
    let raw = raw_json(&sentry.events[0]);
    assert_eq!(raw["format"], "report-uri");
    assert_eq!(
        raw["blocked_url"],
        "http://baddomain.com/test.js?_=1515535030116"
    );
    assert_eq!(raw["status_code"], 0);
    assert_eq!(raw["line_number"], 24);
    assert_eq!(raw["column_number"], 66270);
    assert_eq!(raw["sample"], "");
    assert_eq!(raw["report"]["csp-report"]["script-sample"], "");

    let safari = parse(&sample("tollmanz_safari61_empty_blocked_uri.json"));
    let raw = raw_json(&safari.events[0]);
    assert_eq!(
        raw["source_file"],
        "safari-extension://org.openqa.selenium-r2y477l6xd"
    );
    assert_eq!(raw["line_number"], 83);
    assert_eq!(raw["blocked_url"], "");

    let mdn = parse(&sample("mdn_report_to_single_report_object.json"));
    let raw = raw_json(&mdn.events[0]);
    assert_eq!(raw["format"], "report-to");
    assert_eq!(raw["sample"], "console.log(\"lo\")");
    assert_eq!(raw["age_ms"], 53531);
    assert!(raw["user_agent"].as_str().unwrap().contains("Chrome/127"));

    let nel = parse(&sample("nel_network_error_http_400.json"));
    let raw = raw_json(&nel.events[0]);
    assert_eq!(raw["type"], "network-error");
    assert_eq!(raw["body"]["server_ip"], "192.0.2.172");
    assert_eq!(raw["url"], "https://example.com/previous-page");
}

/// B08: the Reporting API's array, with a report of another type next to the violation.
fn b08_body() -> String {
    case("b08_reporting_api_array.json")
}

/// The B08 violation as `report-uri` sends it (hyphenated keys, no envelope).
fn b08_as_legacy() -> String {
    case("b08_as_legacy.json")
}

#[test]
fn b08_reporting_api_array_gives_one_violation() {
    let batch = parse(b08_body().as_bytes());
    assert!(batch.skipped.is_empty(), "{:?}", batch.skipped);
    let violations: Vec<&ParsedEvent> = batch
        .events
        .iter()
        .filter(|e| e.event.kind == "csp.violation")
        .collect();
    assert_eq!(violations.len(), 1);
    let violation = violations[0];
    assert_eq!(violation.event.label("directive"), Some("script-src-elem"));
    assert_eq!(violation.event.label("blocked"), Some("cdn.example.net"));
    assert_eq!(violation.event.label("host"), Some("app.example.com"));
    assert_eq!(violation.event.label("path"), Some("/login"));
    assert_eq!(violation.event.label("disposition"), Some("enforce"));
    let raw = raw_json(violation);
    assert_eq!(raw["blocked_url"], "https://cdn.example.net/x.js");
    assert_eq!(raw["document_url"], "https://app.example.com/login");
    assert_eq!(violation.event.time_ms, RECEIVED_MS - 12);

    // The deprecation is no error: it is its own kind, not a violation.
    assert_eq!(batch.events.len(), 2);
    assert_eq!(batch.events[1].event.kind, "browser.deprecation");
    assert_eq!(batch.events[1].event.label("feature"), Some("OldApi"));
    assert_eq!(batch.events[1].position, 1);
}

/// The normalised event without what only says which form it came in.
fn comparable(event: &ParsedEvent) -> (String, i64, Vec<(String, String)>, Value) {
    let mut raw = raw_json(event);
    for form_only in ["format", "report", "user_agent", "age_ms"] {
        raw.as_object_mut().unwrap().remove(form_only);
    }
    let labels = event
        .event
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (
        event.event.kind.to_string(),
        event.event.time_ms,
        labels,
        raw,
    )
}

#[test]
fn b08_same_violation_in_legacy_form_is_the_same_event_and_key() {
    // The Reporting API report says it is 12 ms old when it arrives 12 ms after the
    // legacy one: both describe the same moment.
    let reporting = parse_with(&any(), b08_body().as_bytes(), RECEIVED_MS + 12);
    let legacy = parse_with(&any(), b08_as_legacy().as_bytes(), RECEIVED_MS);
    let (reporting, legacy) = (&reporting.events[0], &legacy.events[0]);
    assert_eq!(comparable(reporting), comparable(legacy));
    assert_eq!(reporting.keys, legacy.keys);
    assert!(reporting.keys.is_some());
    // A different violation, or the same one a minute later, is another event.
    let other = b08_as_legacy().replace("x.js", "y.js");
    assert_ne!(parse(other.as_bytes()).events[0].keys, legacy.keys);
    let later = parse_with(&any(), b08_as_legacy().as_bytes(), RECEIVED_MS + 60_000);
    assert_ne!(later.events[0].keys, legacy.keys);
}

#[test]
fn b08_shape_is_read_from_the_body() {
    // The parser never sees the content type: the first byte decides, after
    // whitespace and a byte-order mark.
    let padded = format!("\u{feff} \r\n\t{}", b08_body());
    assert_eq!(parse(padded.as_bytes()).events.len(), 2);
    let padded = format!("\n  {}\n", b08_as_legacy());
    assert_eq!(parse(padded.as_bytes()).events.len(), 1);
    // Legacy reports inside an array (some proxies batch them) are read too.
    let array = format!("[{legacy},{legacy}]", legacy = b08_as_legacy());
    assert_eq!(parse(array.as_bytes()).events.len(), 2);
    // The legacy fields without their wrapper.
    let bare = r#"{"document-uri":"https://app.example.com/","blocked-uri":"inline",
                   "violated-directive":"script-src-elem"}"#;
    let batch = parse(bare.as_bytes());
    assert_eq!(batch.events[0].event.label("blocked"), Some("inline"));
}

/// B09: a Firefox legacy report: no effective-directive or status-code, `self` blocked.
fn b09_body() -> String {
    case("b09_firefox_legacy.json")
}

#[test]
fn b09_firefox_report_without_effective_directive() {
    let batch = parse(b09_body().as_bytes());
    assert_eq!(batch.events.len(), 1);
    let event = &batch.events[0];
    assert_eq!(event.event.label("directive"), Some("script-src"));
    assert_eq!(event.event.label("blocked"), Some("self"));
    let raw = raw_json(event);
    assert_eq!(raw["status_code"], Value::Null);
    assert!(raw.get("status_code").is_none());
    assert_eq!(
        raw["report"]["csp-report"]["violated-directive"],
        "script-src https://app.example.com"
    );

    // The other keywords, and nothing at all, are kept the same way.
    for (value, label) in [
        ("inline", "inline"),
        ("eval", "eval"),
        ("data", "data"),
        ("", "empty"),
    ] {
        let body = b09_body().replace(
            r#""blocked-uri":"self""#,
            &format!(r#""blocked-uri":"{value}""#),
        );
        let batch = parse(body.as_bytes());
        assert_eq!(
            batch.events[0].event.label("blocked"),
            Some(label),
            "{value:?}"
        );
    }
}

#[test]
fn field_names_are_read_whatever_their_case() {
    let snake = r#"{"csp-report":{"document_uri":"https://app.example.com/a",
        "blocked_uri":"https://cdn.example.net/x.js","effective_directive":"img-src",
        "status_code":"404","line_number":"7"}}"#;
    let batch = parse(snake.as_bytes());
    let event = &batch.events[0];
    assert_eq!(event.event.label("directive"), Some("img-src"));
    assert_eq!(event.event.label("blocked"), Some("cdn.example.net"));
    let raw = raw_json(event);
    assert_eq!(raw["status_code"], 404);
    assert_eq!(raw["line_number"], 7);
}

#[test]
fn other_report_types_keep_their_own_kind() {
    let body = r#"[
        {"type":"crash","age":0,"url":"https://app.example.com/editor/12345",
         "body":{"reason":"oom"}},
        {"type":"permissions-policy-violation","age":5,"url":"https://app.example.com/",
         "body":{"featureId":"geolocation","disposition":"enforce"}},
        {"type":"crash","age":0,"url":"https://app.example.com/","body":null}
    ]"#;
    let batch = parse(body.as_bytes());
    let found: Vec<String> = batch.events.iter().map(summary).collect();
    assert_eq!(
        found,
        [
            "browser.crash @0 host=app.example.com path=/editor/:id reason=oom",
            "browser.permissions_policy_violation @5 host=app.example.com path=/",
            "browser.crash @0 host=app.example.com path=/ reason=unknown",
        ]
    );
}

#[test]
fn bad_reports_in_a_batch_are_skipped_and_counted() {
    let body = format!(
        r#"[{legacy}, 7, {{"type":"Not A Name","url":"https://a.example/","body":{{}}}},
           {{"type":"csp-violation","url":"https://a.example/"}},
           {{"url":"https://a.example/"}}, {{"csp-report":"x"}},
           {{"type":"csp-violation","age":99999999999,"url":"https://a.example/",
             "body":{{"blockedURL":"eval","effectiveDirective":"script-src"}}}}]"#,
        legacy = b08_as_legacy()
    );
    let batch = parse(body.as_bytes());
    assert_eq!(batch.events.len(), 2, "{:?}", batch.skipped);
    assert_eq!(batch.skipped.len(), 5, "{:?}", batch.skipped);
    assert!(batch.skipped[0].starts_with("report 1: expected a JSON object"));
    assert!(
        batch.skipped[1].contains("not a name"),
        "{}",
        batch.skipped[1]
    );
    assert!(
        batch.skipped[2].contains("without a body"),
        "{}",
        batch.skipped[2]
    );
    // An age no browser sends dates the report on arrival, and says so.
    assert_eq!(batch.events[1].event.time_ms, RECEIVED_MS);
    assert_eq!(batch.events[1].position, 6);
    assert_eq!(batch.warnings.len(), 1, "{:?}", batch.warnings);
}

#[test]
fn invalid_utf8_costs_only_its_own_report() {
    let mut body = format!("[{},", b08_as_legacy()).into_bytes();
    body.extend_from_slice(b"{\"csp-report\":{\"document-uri\":\"https://a.example/\xff\"}}]");
    let batch = parse(&body);
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.skipped.len(), 1);
    assert!(
        batch.skipped[0].contains("not JSON"),
        "{}",
        batch.skipped[0]
    );

    let single = b"{\"csp-report\":{\"document-uri\":\"https://a.example/\xff\"}}";
    let error = parse_body(&Arc::from("csp"), &any(), single, RECEIVED_MS).unwrap_err();
    assert!(matches!(error, SourceError::BadRequest(_)), "{error:?}");
}

#[test]
fn bodies_that_are_no_report_are_refused() {
    for (body, says) in [
        (&b""[..], "empty body"),
        (b"   ", "empty body"),
        (b"csp-report=1", "expected a JSON object or array"),
        (b"[]", "no report"),
        (b"{\"csp-report\": {\"document-uri\": ", "not JSON"),
        (b"[{\"type\": \"csp-violation\"", "not a JSON array"),
        (b"{\"hello\": 1}", "expected a \\\"csp-report\\\""),
        (b"{\"csp-report\": []}", "not an object"),
        (b"null", "expected a JSON object or array"),
    ] {
        let error = parse_body(&Arc::from("csp"), &any(), body, RECEIVED_MS).unwrap_err();
        let text = format!("{error:?}");
        assert!(
            matches!(error, SourceError::BadRequest(_)) && text.contains(says),
            "{:?}: {text}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn reports_about_other_pages_are_refused_or_skipped() {
    let allowed = only(&["https://app.example.com"]);
    assert_eq!(
        parse_with(&allowed, b08_as_legacy().as_bytes(), RECEIVED_MS)
            .events
            .len(),
        1
    );

    let foreign = b08_as_legacy().replace("https://app.example.com/login", "https://evil.example/");
    let error = parse_body(&Arc::from("csp"), &allowed, foreign.as_bytes(), 0).unwrap_err();
    assert_eq!(
        error,
        SourceError::Forbidden(
            "source \"csp\": reports for pages at https://evil.example are not taken \
             (allowed_origins)"
                .into()
        )
    );
    let anonymised = parse_body(
        &Arc::from("csp"),
        &allowed,
        &sample("wtf_opera_mini_js_inject.json"),
        0,
    )
    .unwrap_err();
    assert!(
        matches!(anonymised, SourceError::Forbidden(_)),
        "{anonymised:?}"
    );

    // In a batch, the others are kept and the foreign ones counted.
    let batch_body = format!("[{legacy},{foreign}]", legacy = b08_as_legacy());
    let batch = parse_with(&allowed, batch_body.as_bytes(), RECEIVED_MS);
    assert_eq!(batch.events.len(), 1);
    assert_eq!(
        batch.skipped,
        ["report 1: pages at https://evil.example is not in allowed_origins"]
    );
    // A batch of nothing but foreign reports is refused as a whole.
    let all_foreign = format!("[{foreign},{foreign}]");
    assert!(matches!(
        parse_body(&Arc::from("csp"), &allowed, all_foreign.as_bytes(), 0),
        Err(SourceError::Forbidden(_))
    ));
    // Other report types are checked against their page too.
    let deprecation = parse_body(
        &Arc::from("csp"),
        &allowed,
        &sample("reporting_api_deprecation.json"),
        0,
    );
    assert!(matches!(deprecation, Err(SourceError::Forbidden(_))));
}

#[test]
fn parsing_is_deterministic() {
    for file in [
        "reporting_api_deprecation.json",
        "relay_sentry_io_chrome_real_report.json",
    ] {
        let body = sample(file);
        let first = parse(&body);
        let second = parse(&body);
        assert_eq!(first.events.len(), second.events.len());
        for (a, b) in first.events.iter().zip(&second.events) {
            assert_eq!(a.event, b.event);
            assert_eq!(a.keys, b.keys);
        }
    }
}

/// Tokens reports are made of, so that generated bodies get past the first byte.
const REPORT_TOKENS: &str = concat!(
    r#"(csp-report|type|body|age|url|document-uri|blocked-uri|blockedURL|"|:|,"#,
    r#"|\{|\}|\[|\]| |[a-z0-9.\-]{1,8}){0,40}"#
);

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
    ) {
        let started = std::time::Instant::now();
        let _ = parse_body(&Arc::from("csp"), &any(), &body, RECEIVED_MS);
        let _ = parse_body(&Arc::from("csp"), &only(&["https://a.example"]), &body, 0);
        proptest::prop_assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn report_like_bodies_never_panic(
        prefix in "[\\[{ ]{0,3}",
        key in REPORT_TOKENS,
    ) {
        let body = format!("{prefix}{key}");
        let _ = parse_body(&Arc::from("csp"), &any(), body.as_bytes(), RECEIVED_MS);
    }
}
