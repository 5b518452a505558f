//! Browser reports through the real server: every sample to an alert in the Slack fake,
//! the field cases B08 and B09, what the endpoint refuses (content type, size, origin,
//! rate), and CORS for the Reporting API.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use backchannel::clock;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::reqwest_lite::Reply;
use support::{SlackFake, sample, start_server};

/// Every arrival in these tests happens at this instant unless a test says otherwise.
const NOW_MS: i64 = 1_700_000_000_500;

/// Two rules that alert once per distinct event: violations by every label, other
/// reports by theirs. Their summaries show the labels, so the Slack messages say which
/// events arrived.
const RULES: &str = r#"
[[rules]]
name = "violation"
kind = "each"
match = { kinds = ["csp.violation"] }
group_by = ["directive", "blocked", "disposition", "host", "path"]
window = "1h"
summary = """\
  {{labels.disposition}} {{labels.directive}} blocked {{labels.blocked}} \
  on {{labels.host}}{{labels.path}}"""

[[rules]]
name = "report"
kind = "each"
match = { kinds = ["browser.deprecation", "browser.intervention", "browser.network_error"] }
group_by = ["feature", "error", "status", "host", "path"]
window = "1h"
summary = """\
  {{event.type}} {{labels.feature}}{{labels.error}}{{labels.status}} \
  on {{labels.host}}{{labels.path}}"""
"#;

fn config(fake: &SlackFake, source: &str) -> String {
    format!(
        r#"
[server]
eval_interval = "100ms"
[store]
path = "{{db}}"
{source}
[contacts.slack]
type = "slack"
token = "xoxb-test-token"
channel = "C0CSP"
api_url = "{}"
delivery_deadline = "1h"
[[routes]]
contacts = ["slack"]
repeat_interval = "4h"
{RULES}
"#,
        fake.api_url()
    )
}

/// A request with exactly these headers (the support client always sends JSON).
async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = axum::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(body.into())).unwrap())
        .await
        .expect("request reaches the server");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn post(url: &str, content_type: &str, body: impl Into<Bytes>) -> Reply {
    send("POST", url, &[("content-type", content_type)], body).await
}

/// Summaries of the alerts Slack got, once `count` have arrived, checking no more come.
async fn alerts(fake: &SlackFake, count: usize) -> BTreeSet<String> {
    fake.wait_for_ok(count, Duration::from_secs(10)).await;
    // Three evaluation rounds more: an alert too many would have come by then.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = fake.requests();
    assert_eq!(sent.len(), count, "{sent:#?}");
    sent.iter()
        .map(|r| {
            let text = r.body["text"].as_str().unwrap_or_default();
            text.split_once("]: ").map_or(text, |(_, s)| s).to_string()
        })
        .collect()
}

/// Each sample with the content type it was sent with (the manifest says so for the
/// captured ones; the specification's for the others).
const SAMPLES: &[(&str, &str)] = &[
    (
        "mdn_report_to_single_report_object.json",
        "application/reports+json",
    ),
    (
        "mdn_report_uri_legacy_csp_report.json",
        "application/csp-report",
    ),
    (
        "nel_network_error_http_400.json",
        "application/reports+json",
    ),
    (
        "relay_sentry_io_chrome_real_report.json",
        "application/csp-report",
    ),
    ("reporting_api_deprecation.json", "application/reports+json"),
    (
        "reporting_api_intervention.json",
        "application/reports+json",
    ),
    (
        "tollmanz_chrome40_effective_directive.json",
        "application/csp-report",
    ),
    (
        "tollmanz_firefox32_no_original_policy.json",
        "application/json",
    ),
    (
        "tollmanz_safari61_empty_blocked_uri.json",
        "application/json",
    ),
    (
        "wtf_android_webview_pseudo_scheme.json",
        "application/csp-report",
    ),
    (
        "wtf_chrome_extension_scheme_only.json",
        "application/csp-report",
    ),
    ("wtf_facebook_inapp_eval.json", "application/csp-report"),
    ("wtf_opera_mini_js_inject.json", "application/csp-report"),
];

#[tokio::test]
async fn every_sample_is_taken_and_alerts() {
    let fake = SlackFake::start().await;
    let source = "[sources.csp]\ntype = \"csp\"\nallowed_origins = [\"*\"]";
    let server = start_server(&config(&fake, source), clock::system()).await;
    let url = format!("{}/ingest/csp", server.base);

    for (file, content_type) in SAMPLES {
        let reply = post(&url, content_type, sample(&format!("csp/{file}"))).await;
        assert_eq!(reply.status, 200, "{file}: {}", reply.text());
        let answer = reply.json();
        assert_eq!(answer["accepted"], 1, "{file}: {answer}");
        assert_eq!(answer["skipped"], 0, "{file}: {answer}");
    }

    let expected: BTreeSet<String> = [
        "enforce script-src-elem blocked inline on example.com/csp-report",
        "report style-src-elem blocked example.com on example.com/signup.html",
        "network-error http.error400 on example.com/bad-request",
        "enforce script-src blocked baddomain.com on sentry.io/sentry/csp/issues/:id/",
        "deprecation websql on example.com/",
        "intervention audio-no-gesture on example.com/",
        "unknown script-src blocked raw.githubusercontent.com on 203.0.113.45:8123/csp",
        "unknown img-src blocked farm8.staticflickr.com on 203.0.113.45:8123/csp",
        "unknown script-src blocked empty on 203.0.113.45:8123/csp",
        "unknown img-src blocked android-webview on www.example.net/source/:id",
        "unknown font-src blocked chrome-extension on van11y.net/accessible-simple-tooltip/",
        "unknown script-src blocked eval on van11y.net/fr/news",
        "unknown script-src blocked opera on unknownunknown",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(alerts(&fake, expected.len()).await, expected);
    server.running.stop().await;
}

/// A field case's input (`tests/fixtures/csp/cases/`).
fn case(name: &str) -> String {
    String::from_utf8(sample(&format!("csp/cases/{name}"))).unwrap()
}

/// B08: a Reporting API batch, a violation and a deprecation.
fn b08_body() -> String {
    case("b08_reporting_api_array.json")
}

/// The B08 violation as `report-uri` sends it.
fn b08_as_legacy() -> String {
    case("b08_as_legacy.json")
}

/// B09: Firefox's legacy report, without effective-directive, `self` blocked.
fn b09_body() -> String {
    case("b09_firefox_legacy.json")
}

fn app_source(extra: &str) -> String {
    format!(
        "[sources.csp]\ntype = \"csp\"\n\
         allowed_origins = [\"https://app.example.com\"]\n{extra}"
    )
}

#[tokio::test]
async fn b08_reporting_api_batch_and_its_legacy_twin() {
    let fake = SlackFake::start().await;
    let server = start_server(&config(&fake, &app_source("")), clock::fixed(NOW_MS)).await;
    let url = format!("{}/ingest/csp", server.base);

    let reply = post(&url, "application/reports+json", b08_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["skipped"].as_u64()),
        (Some(2), Some(0))
    );

    // The same violation in legacy form is the same event: counted once.
    let reply = post(&url, "application/csp-report", b08_as_legacy()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["duplicates"], 1, "{}", reply.text());

    // The shape comes from the body: any of the three content types reads either.
    for content_type in ["application/json", "application/csp-report"] {
        let reply = post(&url, content_type, b08_body()).await;
        assert_eq!(reply.status, 200, "{content_type}: {}", reply.text());
        assert_eq!(
            reply.json()["duplicates"],
            2,
            "{content_type}: {}",
            reply.text()
        );
    }
    for content_type in [
        "application/reports+json; charset=utf-8",
        "application/json",
    ] {
        let reply = post(&url, content_type, b08_as_legacy()).await;
        assert_eq!(
            reply.json()["duplicates"],
            1,
            "{content_type}: {}",
            reply.text()
        );
    }

    let expected: BTreeSet<String> = [
        "enforce script-src-elem blocked cdn.example.net on app.example.com/login",
        "deprecation OldApi on app.example.com/",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(alerts(&fake, 2).await, expected);
    server.running.stop().await;
}

#[tokio::test]
async fn b09_firefox_legacy_report_is_taken() {
    let fake = SlackFake::start().await;
    let server = start_server(&config(&fake, &app_source("")), clock::system()).await;
    let reply = post(
        &format!("{}/ingest/csp", server.base),
        "application/csp-report",
        b09_body(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], 1);
    let expected = BTreeSet::from(["unknown script-src blocked self on app.example.com/".into()]);
    assert_eq!(alerts(&fake, 1).await, expected);
    server.running.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_clear_answer() {
    let fake = SlackFake::start().await;
    let text = config(&fake, &app_source("max_body_bytes = 2048"));
    let server = start_server(&text, clock::fixed(NOW_MS)).await;
    let url = format!("{}/ingest/csp", server.base);
    let error = |reply: &Reply| {
        reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    let reply = post(&url, "text/plain", b09_body()).await;
    assert_eq!(reply.status, 415);
    assert!(
        error(&reply).contains("\"text/plain\" is not a report"),
        "{}",
        error(&reply)
    );
    let reply = send("POST", &url, &[], b09_body()).await;
    assert_eq!(reply.status, 415);
    assert!(
        error(&reply).contains("no Content-Type"),
        "{}",
        error(&reply)
    );

    let reply = post(&url, "application/csp-report", b09_body()[..60].to_string()).await;
    assert_eq!(reply.status, 400);
    assert!(error(&reply).contains("not JSON"), "{}", error(&reply));

    let big = format!("[{}]", vec![b09_body(); 20].join(","));
    let reply = post(&url, "application/reports+json", big).await;
    assert_eq!(reply.status, 413);
    assert!(error(&reply).contains("2048 bytes"), "{}", error(&reply));

    // Invalid UTF-8 in one report of a batch costs that report only.
    let mut body = format!("[{},", b09_body()).into_bytes();
    body.extend_from_slice(
        b"{\"csp-report\":{\"document-uri\":\"https://app.example.com/\xff\"}}]",
    );
    let reply = post(&url, "application/reports+json", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        (
            reply.json()["accepted"].as_u64(),
            reply.json()["skipped"].as_u64()
        ),
        (Some(1), Some(1))
    );

    // Reports about other sites' pages: refused alone, skipped and counted in a batch.
    let foreign = b09_body().replace("https://app.example.com/\"", "https://evil.example/\"");
    let reply = post(&url, "application/csp-report", foreign.clone()).await;
    assert_eq!(reply.status, 403);
    assert!(
        error(&reply).contains("https://evil.example"),
        "{}",
        error(&reply)
    );
    let mixed = format!("[{foreign},{}]", b08_as_legacy());
    let reply = post(&url, "application/reports+json", mixed).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["skipped"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        answer["skipped_reasons"][0],
        "report 0: pages at https://evil.example is not in allowed_origins"
    );

    let reply = post(
        &format!("{}/ingest/nope", server.base),
        "application/json",
        "{}",
    )
    .await;
    assert_eq!(reply.status, 404);
    server.running.stop().await;
}

#[tokio::test]
async fn a_client_sending_too_fast_gets_429_with_retry_after() {
    let fake = SlackFake::start().await;
    let limits = "rate_limit_per_minute = 6\nrate_limit_burst = 2";
    let server = start_server(&config(&fake, &app_source(limits)), clock::fixed(NOW_MS)).await;
    let url = format!("{}/ingest/csp", server.base);
    for _ in 0..2 {
        let reply = post(&url, "application/csp-report", b09_body()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // The clock stands still, so no token comes back: one comes every 10 s.
    let reply = post(&url, "application/csp-report", b09_body()).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(reply.headers["retry-after"], "10");
    assert!(
        reply.text().contains("too many reports"),
        "{}",
        reply.text()
    );
    // A proxy's header is not trusted unless configured: still the same client.
    let reply = send(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", "192.0.2.7"),
        ],
        b09_body(),
    )
    .await;
    assert_eq!(reply.status, 429);
    server.running.stop().await;
}

#[tokio::test]
async fn behind_a_proxy_its_header_names_the_client() {
    let fake = SlackFake::start().await;
    let limits = "rate_limit_burst = 1\nclient_ip_header = \"X-Forwarded-For\"";
    let server = start_server(&config(&fake, &app_source(limits)), clock::fixed(NOW_MS)).await;
    let url = format!("{}/ingest/csp", server.base);
    let from = |client: &'static str| {
        let url = url.clone();
        async move {
            let headers = [
                ("content-type", "application/json"),
                ("x-forwarded-for", client),
            ];
            send("POST", &url, &headers, b09_body()).await.status
        }
    };
    assert_eq!(from("203.0.113.9, 192.0.2.1").await, 200);
    assert_eq!(from("192.0.2.1").await, 429);
    assert_eq!(from("192.0.2.2").await, 200);
    server.running.stop().await;
}

#[tokio::test]
async fn reporting_api_preflight_and_allow_origin() {
    let fake = SlackFake::start().await;
    let sources = format!(
        "{}\n[sources.sendgrid]\ntype = \"sendgrid\"",
        app_source("")
    );
    let server = start_server(&config(&fake, &sources), clock::system()).await;
    let url = format!("{}/ingest/csp", server.base);
    let preflight = |url: String, origin: &'static str| async move {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ];
        send("OPTIONS", &url, &headers, Bytes::new()).await
    };

    let reply = preflight(url.clone(), "https://app.example.com").await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let header = |reply: &Reply, name: &str| {
        reply
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        header(&reply, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&reply, "access-control-allow-methods").as_deref(),
        Some("POST")
    );
    assert_eq!(
        header(&reply, "access-control-allow-headers").as_deref(),
        Some("content-type")
    );
    assert!(header(&reply, "access-control-max-age").is_some());
    assert_eq!(header(&reply, "vary").as_deref(), Some("origin"));

    let reply = preflight(url.clone(), "https://evil.example").await;
    assert_eq!(reply.status, 403);
    assert!(header(&reply, "access-control-allow-origin").is_none());
    let reply = preflight(
        format!("{}/ingest/sendgrid", server.base),
        "https://app.example.com",
    )
    .await;
    assert_eq!(
        reply.status, 403,
        "provider webhooks take no posts from pages"
    );
    let reply = preflight(
        format!("{}/ingest/nope", server.base),
        "https://app.example.com",
    )
    .await;
    assert_eq!(reply.status, 404);

    // The POST itself carries the header the browser checks.
    let headers = [
        ("content-type", "application/reports+json"),
        ("origin", "https://app.example.com"),
    ];
    let reply = send("POST", &url, &headers, b08_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        header(&reply, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let reply = post(&url, "application/csp-report", b09_body()).await;
    assert!(header(&reply, "access-control-allow-origin").is_none());
    server.running.stop().await;
}

/// `replay --json` of `payloads` on the example config's browser-reports source.
fn replay_example(payloads: &[std::path::PathBuf]) -> Vec<serde_json::Value> {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_backchannel"))
        .args(["replay", "--config", example, "--source", "csp", "--json"])
        .env_remove("SLACK_BOT_TOKEN")
        .args(payloads)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn example_rules_tell_a_site_owner_what_matters() {
    // A deploy that loads a script from a host the policy does not allow: twenty
    // visitors' browsers block it within a few seconds.
    let dir = tempfile::tempdir().unwrap();
    let reports: Vec<String> = (0..20)
        .map(|visitor| {
            format!(
                r#"{{"type":"csp-violation","age":{},"url":"https://www.example.com/cart/{visitor}",
                "body":{{"documentURL":"https://www.example.com/cart/{visitor}",
                "blockedURL":"https://cdn.vendor.example/tag.js?v={visitor}",
                "effectiveDirective":"script-src-elem","disposition":"enforce",
                "lineNumber":{visitor}}}}}"#,
                visitor * 100
            )
        })
        .collect();
    let batch = dir.path().join("batch.json");
    std::fs::write(&batch, format!("[{}]", reports.join(","))).unwrap();
    let fixtures = support::samples().join("csp");
    let sent = replay_example(&[
        batch,
        fixtures.join("reporting_api_deprecation.json"),
        fixtures.join("mdn_report_to_single_report_object.json"),
    ]);
    let summaries: BTreeSet<(String, String)> = sent
        .iter()
        .map(|n| {
            (
                n["rule"].as_str().unwrap().to_string(),
                n["summary"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The one inline-script report from the MDN sample stays below the threshold.
    let expected: BTreeSet<(String, String)> = [
        (
            "csp-enforced-violations",
            "CSP blocked cdn.vendor.example (script-src-elem) on www.example.com 20 times \
             in 10 min",
        ),
        (
            "browser-deprecation",
            "deprecation report on example.com: websql (removal 2020-01-01)",
        ),
    ]
    .into_iter()
    .map(|(r, s)| (r.to_string(), s.to_string()))
    .collect();
    assert_eq!(summaries, expected, "{sent:#?}");
}
