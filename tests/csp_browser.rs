//! A real browser's reports, end to end: headless Chromium loads a page served here on
//! loopback whose policies it violates, and posts the reports to backchannel itself,
//! one by `report-uri` (enforced policy) and one through the Reporting API
//! (`Reporting-Endpoints`, report-only policy, after a CORS preflight since the
//! endpoint is on another port). The alerts they fire reach the Slack fake.
//!
//! Chromium uses the Reporting API only for pages and endpoints served over HTTPS
//! (loopback HTTP is not enough), so the page and backchannel are both reached through
//! a TLS proxy here, with a self-signed certificate for `127.0.0.1` and `localhost`
//! (`tests/fixtures/csp_browser/`) that the browser is told to accept.
//!
//! Needs Chromium (`apt-get install chromium`; `.ci/run` installs it). Without it the
//! test fails and says so: a browser test that passes without a browser proves nothing.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use backchannel::clock;
use support::{SlackFake, sample, start_server};
use tokio_rustls::rustls;

/// Longest wait for the browser's reports. Chromium uploads Reporting API reports in
/// batches every minute or so; `--short-reporting-delay` brings that under a second,
/// so this bound is only reached when something is wrong.
const REPORT_WAIT: Duration = Duration::from_secs(90);

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: this test drives a real browser; install it with \
         `apt-get install -y --no-install-recommends chromium` (as .ci/run does) or set \
         CHROMIUM to its path",
        path.display()
    );
    path
}

/// Kills the browser however the test ends.
struct Browser(std::process::Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn launch(binary: &Path, profile: &Path, url: &str) -> Browser {
    let child = std::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--short-reporting-delay",
            "--ignore-certificate-errors",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    Browser(child)
}

/// Listens on a loopback port and forwards each connection, TLS removed, to `target`.
async fn tls_proxy(target: SocketAddr) -> SocketAddr {
    let certificate =
        rustls::pki_types::CertificateDer::from(sample("csp_browser/loopback_cert.der"));
    let key =
        rustls::pki_types::PrivateKeyDer::Pkcs8(sample("csp_browser/loopback_key.pk8.der").into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// The page: an inline script the enforced policy blocks, and an image from another
/// origin (`localhost` is not `127.0.0.1`) that the report-only policy reports.
fn page_app(page_port: u16, backchannel: &str) -> Router {
    let endpoint = format!("{backchannel}/ingest/csp");
    let enforced = format!("script-src 'self'; report-uri {endpoint}");
    let report_only = "img-src 'self'; report-to csp-endpoint".to_string();
    let endpoints = format!("csp-endpoint=\"{endpoint}\"");
    let html = format!(
        "<!doctype html><html><head><title>csp test</title></head><body>\
         <script>document.title = 'ran';</script>\
         <img src=\"https://localhost:{page_port}/pixel.png?visitor=42\">\
         </body></html>"
    );
    Router::new()
        .route(
            "/",
            get(move || {
                let (enforced, report_only, endpoints, html) = (
                    enforced.clone(),
                    report_only.clone(),
                    endpoints.clone(),
                    html.clone(),
                );
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
                            (header::CONTENT_SECURITY_POLICY, enforced),
                            (header::CONTENT_SECURITY_POLICY_REPORT_ONLY, report_only),
                            (
                                header::HeaderName::from_static("reporting-endpoints"),
                                endpoints,
                            ),
                        ],
                        html,
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/pixel.png",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reports_reach_slack() {
    let binary = chromium();
    backchannel::install_crypto_provider();
    let fake = SlackFake::start().await;
    let page_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_port = tls_proxy(page_listener.local_addr().unwrap()).await.port();
    let page_origin = format!("https://127.0.0.1:{page_port}");

    let config = format!(
        r#"
[server]
eval_interval = "100ms"
[store]
path = "{{db}}"
[sources.csp]
type = "csp"
allowed_origins = ["{page_origin}"]
[contacts.slack]
type = "slack"
token = "xoxb-test-token"
channel = "C0CSP"
api_url = "{}"
delivery_deadline = "1h"
[[routes]]
contacts = ["slack"]
repeat_interval = "4h"
[[rules]]
name = "violation"
kind = "each"
match = {{ kinds = ["csp.violation"] }}
group_by = ["directive", "blocked", "disposition", "host", "path"]
window = "1h"
summary = """\
  {{{{event.format}}}} {{{{labels.disposition}}}} {{{{labels.directive}}}} \
  blocked {{{{labels.blocked}}}} on {{{{labels.host}}}}{{{{labels.path}}}}"""
"#,
        fake.api_url()
    );
    let server = start_server(&config, clock::system()).await;
    let endpoint = tls_proxy(server.running.addr).await;
    let app = page_app(page_port, &format!("https://{endpoint}"));
    tokio::spawn(async move { axum::serve(page_listener, app).await.unwrap() });

    let profile = tempfile::tempdir().unwrap();
    let mut browser = launch(&binary, profile.path(), &format!("{page_origin}/"));

    let expected: BTreeSet<String> = [
        format!("report-uri enforce script-src-elem blocked inline on 127.0.0.1:{page_port}/"),
        format!("report-to report img-src blocked localhost:{page_port} on 127.0.0.1:{page_port}/"),
    ]
    .into_iter()
    .collect();
    let started = Instant::now();
    let summaries = loop {
        let summaries: BTreeSet<String> = fake
            .requests()
            .iter()
            .filter(|r| r.answered == "ok")
            .map(|r| {
                let text = r.body["text"].as_str().unwrap_or_default();
                text.split_once("]: ").map_or(text, |(_, s)| s).to_string()
            })
            .collect();
        if summaries.len() >= expected.len() {
            break summaries;
        }
        if let Ok(Some(status)) = browser.0.try_wait() {
            panic!("chromium exited ({status}) before its reports arrived: {summaries:#?}");
        }
        assert!(
            started.elapsed() < REPORT_WAIT,
            "waited {REPORT_WAIT:?} for Chromium's reports; alerts so far: {summaries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(browser);
    assert_eq!(summaries, expected);

    // The alerts carry the labels; the image's query string is in no label.
    let blocks: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.body["blocks"].to_string())
        .collect();
    assert!(
        blocks.iter().all(|b| !b.contains("visitor=42")),
        "{blocks:#?}"
    );
    server.running.stop().await;
}
