//! AWS sources through the real server: SNS envelopes signed by AWS (the real samples and
//! certificate) and by a key the test makes with `openssl`, a loopback fake of the SNS
//! hosts that serves certificates and records the confirmation GET, EventBridge events
//! posted by an API destination, and SES notifications; events are checked through a
//! Slack fake. Field case B06 (SNS labels JSON `text/plain`) is pinned here.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use support::{SlackFake, sample, start_server};

const REAL_CERT: &str = "aws/sns_signing_cert_7ff5318490ec183fbaddaa2a969abfda.pem";
const REAL_CERT_PATH: &str = "/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem";
const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";

/// A clock the test moves.
fn settable(ms: i64) -> (Arc<AtomicI64>, backchannel::clock::Clock) {
    let now = Arc::new(AtomicI64::new(ms));
    let read = now.clone();
    (now, Arc::new(move || read.load(Ordering::SeqCst)))
}

fn ms(iso: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(iso)
        .unwrap()
        .timestamp_millis()
}

/// One request the fake SNS host received.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    host: String,
    path: String,
}

#[derive(Default)]
struct AwsState {
    files: HashMap<String, Vec<u8>>,
    /// Status for the next confirmation GETs, in order; 200 when none is left.
    confirm_script: Vec<u16>,
    seen: Vec<Seen>,
}

/// A fake of the SNS hosts on loopback, reached through `test_connect_to`.
#[derive(Clone)]
struct FakeAws {
    addr: SocketAddr,
    state: Arc<Mutex<AwsState>>,
}

impl FakeAws {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(AwsState::default()));
        let app = Router::new().fallback(answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    fn serve(&self, path: &str, body: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), body);
    }

    fn script_confirmations(&self, statuses: &[u16]) {
        self.state
            .lock()
            .unwrap()
            .confirm_script
            .extend_from_slice(statuses);
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn confirmations(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.contains("Action=ConfirmSubscription"))
            .collect()
    }
}

async fn answer(
    State(state): State<Arc<Mutex<AwsState>>>,
    uri: Uri,
    headers: HeaderMap,
) -> axum::response::Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut state = state.lock().unwrap();
    state.seen.push(Seen {
        host,
        path: path.clone(),
    });
    if path.contains("Action=ConfirmSubscription") {
        let status = if state.confirm_script.is_empty() {
            200
        } else {
            state.confirm_script.remove(0)
        };
        let body = "<ConfirmSubscriptionResponse><ConfirmSubscriptionResult>\
                    <SubscriptionArn>arn</SubscriptionArn></ConfirmSubscriptionResult>\
                    </ConfirmSubscriptionResponse>";
        return (StatusCode::from_u16(status).unwrap(), body).into_response();
    }
    match state.files.get(uri.path()) {
        Some(body) => (StatusCode::OK, body.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such key").into_response(),
    }
}

/// An RSA key and a self-signed certificate made with the `openssl` CLI, so that what
/// signs in these tests shares no code with what verifies.
struct Signer {
    dir: tempfile::TempDir,
    cert: Vec<u8>,
}

impl Signer {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=sns.amazonaws.com", "-keyout"])
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl CLI is installed (.ci/run installs it)");
        assert!(status.success());
        let cert = std::fs::read(dir.path().join("cert.pem")).unwrap();
        Self { dir, cert }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Base64 RSA PKCS#1 v1.5 signature of `text`: SHA1 for version 1, SHA256 for 2.
    fn sign(&self, text: &str, version: &str) -> String {
        std::fs::write(self.path("text"), text).unwrap();
        let digest = if version == "1" { "-sha1" } else { "-sha256" };
        let status = std::process::Command::new("openssl")
            .args(["dgst", digest, "-sign"])
            .arg(self.path("key.pem"))
            .arg("-out")
            .arg(self.path("signature"))
            .arg(self.path("text"))
            .status()
            .unwrap();
        assert!(status.success());
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(self.path("signature")).unwrap())
    }

    /// `fields` with `Signature` (over SNS's canonical string of them, in the order
    /// given), `SignatureVersion` and `SigningCertURL` added.
    fn signed(&self, fields: &[(&str, &str)], version: &str, cert_url: &str) -> Value {
        let mut text = String::new();
        for (name, value) in fields {
            text.push_str(&format!("{name}\n{value}\n"));
        }
        let mut message = serde_json::Map::new();
        for (name, value) in fields {
            message.insert(name.to_string(), json!(value));
        }
        message.insert("SignatureVersion".into(), json!(version));
        message.insert("Signature".into(), json!(self.sign(&text, version)));
        message.insert("SigningCertURL".into(), json!(cert_url));
        Value::Object(message)
    }
}

const TEST_CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:bot-alerts";

/// A signed Notification on `TOPIC`, sent now.
fn notification(signer: &Signer, id: &str, message: &str, version: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    signer.signed(
        &[
            ("Message", message),
            ("MessageId", id),
            ("Timestamp", &now),
            ("TopicArn", TOPIC),
            ("Type", "Notification"),
        ],
        version,
        TEST_CERT_URL,
    )
}

/// Posts `body` with exactly these headers (the support client always adds a JSON
/// content type, and SNS never sends one).
async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> (u16, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut request = axum::http::Request::post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(body.into())).unwrap())
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| json!({ "text": String::from_utf8_lossy(&body) }));
    (status, value)
}

/// A request that must be refused: headers, body, status, and words of the reason.
type Refused<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);

/// Posts each case and checks its status and reason.
async fn check_refused(url: &str, cases: Vec<Refused<'_>>) {
    for (headers, body, status, reason) in cases {
        let (got, answer) = post(url, &headers, body).await;
        assert_eq!(got, status, "{reason}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{reason}: {answer}");
    }
}

/// The headers SNS sends with a message of `kind`.
fn sns_headers(kind: &str) -> [(&'static str, &str); 2] {
    [
        ("content-type", TEXT_PLAIN),
        ("x-amz-sns-message-type", kind),
    ]
}

/// Server config: `sources` as given, every alert to the Slack fake, and `rules`.
fn config(slack: &SlackFake, sources: &str, rules: &str) -> String {
    format!(
        r##"
[server]
eval_interval = "100ms"
[store]
path = "{{db}}"
{sources}
[contacts.slack]
type = "slack"
token = "xoxb-test-token"
channel = "#aws"
api_url = "{}"
delivery_deadline = "1h"
[[routes]]
contacts = ["slack"]
repeat_interval = "4h"
{rules}
"##,
        slack.api_url()
    )
}

fn sns_source(id: &str, fake: &FakeAws, topics: &[&str], extra: &str) -> String {
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[sources.{id}]\ntype = \"sns\"\ntopics = [{}]\ntest_connect_to = \"{}\"\n{extra}\n",
        topics.join(", "),
        fake.addr
    )
}

/// An `each` rule for `kind`, grouped by `labels`, whose summary names them all.
fn rule(kind: &str, labels: &[&str]) -> String {
    let group: Vec<String> = labels.iter().map(|l| format!("{l:?}")).collect();
    let shown: Vec<String> = labels
        .iter()
        .map(|l| format!("{l}={{{{labels.{l}}}}}"))
        .collect();
    format!(
        "[[rules]]\nname = \"{}\"\nkind = \"each\"\nmatch = {{ kinds = [\"{kind}\"] }}\n\
         group_by = [{}]\nwindow = \"1h\"\nsummary = \"{kind} {}\"\n",
        kind.replace('.', "-"),
        group.join(", "),
        shown.join(" ")
    )
}

/// The sorted `text` of the firing messages Slack received, once `count` have arrived
/// (tests that move the clock far also see resolutions, which are not these).
async fn slack_texts(slack: &SlackFake, count: usize) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let mut texts: Vec<String> = slack
            .requests()
            .iter()
            .filter(|r| r.answered == "ok")
            .filter_map(|r| r.body["text"].as_str().map(str::to_string))
            .filter(|t| t.starts_with("Firing"))
            .collect();
        if texts.len() >= count {
            texts.sort();
            return texts;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "waited for {count} firing messages; got {:#?}",
            slack.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn real_aws_signatures_verify_and_a_changed_byte_does_not() {
    let slack = SlackFake::start().await;
    let fake = FakeAws::start().await;
    fake.serve(REAL_CERT_PATH, sample(REAL_CERT));
    let sources = sns_source(
        "sns-real",
        &fake,
        &["arn:aws:sns:us-east-2:295079676684:*"],
        "",
    );
    let rules = rule("aws.sns_notification", &["topic", "region"]);
    let (now, clock) = settable(ms("2022-07-28T21:30:00Z"));
    let server = start_server(&config(&slack, &sources, &rules), clock).await;
    let url = format!("{}/ingest/sns-real", server.base);

    for file in [
        "aws/sns_notification_real_signed_sha1.json",
        "aws/sns_notification_real_signed_sha256.json",
    ] {
        let (status, answer) = post(&url, &sns_headers("Notification"), sample(file)).await;
        assert_eq!(status, 200, "{file}: {answer}");
        assert_eq!(answer["accepted"], 1, "{answer}");
    }
    // Both messages name the same certificate: fetched once, from the SNS host.
    let fetched = fake.seen();
    assert_eq!(
        fetched,
        [Seen {
            host: "sns.us-east-2.amazonaws.com".into(),
            path: REAL_CERT_PATH.into()
        }]
    );
    let texts = slack_texts(&slack, 2).await;
    assert_eq!(
        texts,
        [
            "Firing [warning]: aws.sns_notification \
             topic=publish-and-verify-62674b1d-4295-426b-88e7-5fb75652a04e region=us-east-2",
            "Firing [warning]: aws.sns_notification \
             topic=publish-and-verify-892f85fe-4836-424d-8188-ab85bef0f362 region=us-east-2",
        ]
    );

    // SNS redelivers with the same MessageId: a duplicate.
    let again = sample("aws/sns_notification_real_signed_sha1.json");
    let (status, answer) = post(&url, &sns_headers("Notification"), again.clone()).await;
    assert_eq!(
        (status, answer["duplicates"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );

    // One byte changed anywhere the signature covers is refused, and nothing counts.
    let text = String::from_utf8(again.clone()).unwrap();
    for changed in [
        text.replace("Hello world", "Hello World"),
        text.replace("21:23:58.317Z", "21:23:59.317Z"),
        text.replace("792cda85", "792cda86"),
        text.replace("publish-and-verify-892f", "publish-and-verify-892e"),
    ] {
        assert_ne!(changed, text);
        let (status, answer) = post(&url, &sns_headers("Notification"), changed).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(
            answer["error"],
            "source \"sns-real\": signature does not verify"
        );
    }

    // An hour and more later the same message is stale.
    now.store(ms("2022-07-28T22:30:00Z"), Ordering::SeqCst);
    let (status, answer) = post(&url, &sns_headers("Notification"), again.clone()).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("max_message_age"),
        "{answer}"
    );
    assert_eq!(fake.seen().len(), 1, "nothing more was fetched");
    server.running.stop().await;
}

#[tokio::test]
async fn an_expired_certificate_or_one_not_served_is_refused() {
    let slack = SlackFake::start().await;
    let fake = FakeAws::start().await;
    let sources = sns_source(
        "sns-cert",
        &fake,
        &["arn:aws:sns:us-east-2:295079676684:*"],
        "max_message_age = \"400d\"",
    );
    let (now, clock) = settable(ms("2022-07-28T21:30:00Z"));
    let server = start_server(&config(&slack, &sources, ""), clock).await;
    let url = format!("{}/ingest/sns-cert", server.base);
    let body = sample("aws/sns_notification_real_signed_sha256.json");

    // Not served (yet): SNS must retry, so 502, and the failure is not cached.
    let (status, answer) = post(&url, &sns_headers("Notification"), body.clone()).await;
    assert_eq!(status, 502, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("answered HTTP 404"), "{error}");
    fake.serve(
        REAL_CERT_PATH,
        b"<html>a proxy's error page</html>".to_vec(),
    );
    let (status, _) = post(&url, &sns_headers("Notification"), body.clone()).await;
    assert_eq!(status, 502);
    fake.serve(REAL_CERT_PATH, sample(REAL_CERT));

    // After the certificate's notAfter (2022-08-17) it no longer vouches for anything.
    now.store(ms("2022-09-01T00:00:00Z"), Ordering::SeqCst);
    let (status, answer) = post(&url, &sns_headers("Notification"), body.clone()).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not valid at this time")
    );

    now.store(ms("2022-07-28T21:30:00Z"), Ordering::SeqCst);
    let (status, answer) = post(&url, &sns_headers("Notification"), body).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    assert_eq!(
        fake.seen().len(),
        3,
        "two failed fetches, then one that is cached"
    );
    server.running.stop().await;
}

/// Field case B06: a SubscriptionConfirmation labelled `text/plain` is read as JSON,
/// and confirmed with exactly one GET once its signature verifies; each negative control
/// is a 4xx and no GET.
#[tokio::test]
async fn b06_subscription_confirmation_as_text_plain() {
    let slack = SlackFake::start().await;
    let fake = FakeAws::start().await;
    let signer = Signer::new();
    fake.serve("/SimpleNotificationService-test.pem", signer.cert.clone());
    let sources = sns_source("sns-b06", &fake, &[TOPIC], "");
    let rules = rule("aws.sns_subscription_confirmation", &["topic", "account"]);
    let server = start_server(
        &config(&slack, &sources, &rules),
        backchannel::clock::system(),
    )
    .await;
    let url = format!("{}/ingest/sns-b06", server.base);

    let token = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let subscribe = format!(
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}\
         &Token={token}"
    );
    let confirmation = |topic: &str, subscribe: &str, cert: &str| {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        signer.signed(
            &[
                ("Message", "Confirm subscription to bot-alerts (test)."),
                ("MessageId", "11111111-2222-3333-4444-555555555555"),
                ("SubscribeURL", subscribe),
                ("Timestamp", &now),
                ("Token", token),
                ("TopicArn", topic),
                ("Type", "SubscriptionConfirmation"),
            ],
            "2",
            cert,
        )
    };
    let headers = [
        ("content-type", TEXT_PLAIN),
        ("x-amz-sns-message-type", "SubscriptionConfirmation"),
        (
            "x-amz-sns-message-id",
            "11111111-2222-3333-4444-555555555555",
        ),
        ("x-amz-sns-topic-arn", TOPIC),
    ];

    let other_topic = "arn:aws:sns:us-east-1:123456789012:someone-elses";
    let evil_subscribe = subscribe.replace("sns.us-east-1.amazonaws.com", "sns.evil.example");
    let http_subscribe = subscribe.replace("https:", "http:");
    let evil_cert = "https://evil.example/SimpleNotificationService-test.pem";
    let http_cert = TEST_CERT_URL.replace("https:", "http:");
    for (body, status, reason) in [
        (
            confirmation(other_topic, &subscribe, TEST_CERT_URL),
            403,
            "not in this source's topics",
        ),
        (
            confirmation(TOPIC, &evil_subscribe, TEST_CERT_URL),
            403,
            "SubscribeURL host",
        ),
        (
            confirmation(TOPIC, &http_subscribe, TEST_CERT_URL),
            403,
            "SubscribeURL is http",
        ),
        (
            confirmation(TOPIC, &subscribe, evil_cert),
            401,
            "SigningCertURL host",
        ),
        (
            confirmation(TOPIC, &subscribe, &http_cert),
            401,
            "SigningCertURL is http",
        ),
    ] {
        let (got, answer) = post(&url, &headers, body.to_string()).await;
        assert_eq!(got, status, "{reason}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(reason),
            "{answer}"
        );
    }
    assert_eq!(
        fake.seen(),
        [],
        "no negative control fetched or confirmed anything"
    );

    let (status, answer) = post(
        &url,
        &headers,
        confirmation(TOPIC, &subscribe, TEST_CERT_URL).to_string(),
    )
    .await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    assert_eq!(
        fake.confirmations(),
        [Seen {
            host: "sns.us-east-1.amazonaws.com".into(),
            path: format!("/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={token}"),
        }],
        "exactly one GET of SubscribeURL"
    );
    let texts = slack_texts(&slack, 1).await;
    assert_eq!(
        texts,
        [
            "Firing [warning]: aws.sns_subscription_confirmation topic=bot-alerts \
             account=123456789012"
        ]
    );

    // A signature made by another key over the same confirmation is refused, unconfirmed.
    let mut forged = confirmation(TOPIC, &subscribe, TEST_CERT_URL);
    forged["Signature"] = json!(Signer::new().sign("anything", "2"));
    let (status, _) = post(&url, &headers, forged.to_string()).await;
    assert_eq!(status, 401);
    assert_eq!(fake.confirmations().len(), 1);

    // A confirmation SNS did not take is a 502, so that SNS sends it again.
    fake.script_confirmations(&[500]);
    let (status, answer) = post(
        &url,
        &headers,
        confirmation(TOPIC, &subscribe, TEST_CERT_URL).to_string(),
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("subscription not confirmed"), "{error}");
    assert!(
        !error.contains(token),
        "the token never reaches an answer: {error}"
    );
    server.running.stop().await;
}

#[tokio::test]
async fn both_signature_versions_end_to_end_with_a_generated_key() {
    let slack = SlackFake::start().await;
    let fake = FakeAws::start().await;
    let signer = Signer::new();
    fake.serve("/SimpleNotificationService-test.pem", signer.cert.clone());
    let sources = sns_source("sns-keys", &fake, &[TOPIC], "");
    let rules = [
        rule(
            "aws.spot_interruption",
            &["topic", "instance_action", "region"],
        ),
        rule(
            "ses.bounce",
            &["domain", "bounce_type", "classification", "reason"],
        ),
        rule("ses.spamreport", &["domain", "feedback_type"]),
    ]
    .concat();
    let server = start_server(
        &config(&slack, &sources, &rules),
        backchannel::clock::system(),
    )
    .await;
    let url = format!("{}/ingest/sns-keys", server.base);
    let text = |path: &str| String::from_utf8(sample(path)).unwrap();

    // An EventBridge event and the two documented SES notifications, each as the Message
    // of a notification, signed with SHA1 and SHA256 in turn.
    let messages = [
        (
            "n-1",
            text("aws/eventbridge_spot_interruption_warning_anth.json"),
            "1",
        ),
        (
            "n-2",
            text("other/ses_notification_bounce_with_dsn_docs.json"),
            "2",
        ),
        (
            "n-3",
            text("other/ses_notification_complaint_with_feedback_docs.json"),
            "1",
        ),
    ];
    for (id, message, version) in &messages {
        let body = notification(&signer, id, message, version).to_string();
        let (status, answer) = post(&url, &sns_headers("Notification"), body).await;
        assert_eq!(
            (status, answer["accepted"].as_u64()),
            (200, Some(1)),
            "{id}: {answer}"
        );
    }
    assert_eq!(
        fake.seen().len(),
        1,
        "the certificate is fetched once and cached"
    );
    let texts = slack_texts(&slack, 3).await;
    assert_eq!(
        texts,
        [
            "Firing [warning]: aws.spot_interruption topic=bot-alerts instance_action=terminate \
             region=us-east-1",
            "Firing [warning]: ses.bounce domain=example.com bounce_type=bounce \
             classification=invalid_address reason=5.1.1",
            "Firing [warning]: ses.spamreport domain=example.com feedback_type=abuse",
        ]
    );

    // The spot event posted again in a new SNS message (EventBridge retried) is the
    // same event.
    let (_, message, _) = &messages[0];
    let body = notification(&signer, "n-4", message, "2").to_string();
    let (status, answer) = post(&url, &sns_headers("Notification"), body).await;
    assert_eq!(
        (status, answer["duplicates"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );

    // The signature of one version does not pass as the other.
    let mut swapped = notification(&signer, "n-5", "x", "1");
    swapped["SignatureVersion"] = json!("2");
    let (status, _) = post(&url, &sns_headers("Notification"), swapped.to_string()).await;
    assert_eq!(status, 401);
    let mut unknown = notification(&signer, "n-6", "x", "2");
    unknown["SignatureVersion"] = json!("3");
    let (status, answer) = post(&url, &sns_headers("Notification"), unknown.to_string()).await;
    assert_eq!(status, 401);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("SignatureVersion \"3\"")
    );
    server.running.stop().await;
}

#[tokio::test]
async fn bad_sns_requests_get_a_reason() {
    let slack = SlackFake::start().await;
    let fake = FakeAws::start().await;
    let signer = Signer::new();
    fake.serve("/SimpleNotificationService-test.pem", signer.cert.clone());
    let sources = sns_source("sns-bad", &fake, &[TOPIC], "max_body_bytes = 4096");
    let server = start_server(&config(&slack, &sources, ""), backchannel::clock::system()).await;
    let url = format!("{}/ingest/sns-bad", server.base);
    let good = notification(&signer, "b-1", "fine", "2").to_string();

    let multipart = [("content-type", "multipart/form-data; boundary=x")];
    let mut invalid_utf8 = good.clone().into_bytes();
    let at = good.find("fine").unwrap();
    invalid_utf8[at] = 0xff;
    let stale = signer
        .signed(
            &[
                ("Message", "old"),
                ("MessageId", "b-2"),
                ("Timestamp", "2020-01-01T00:00:00.000Z"),
                ("TopicArn", TOPIC),
                ("Type", "Notification"),
            ],
            "2",
            TEST_CERT_URL,
        )
        .to_string();
    let cases: Vec<Refused> = vec![
        (
            multipart.to_vec(),
            good.clone().into_bytes(),
            415,
            "multipart/form-data",
        ),
        (
            vec![("content-type", "application/x-www-form-urlencoded")],
            good.clone().into_bytes(),
            415,
            "not what SNS sends",
        ),
        (
            sns_headers("Notification").to_vec(),
            good.as_bytes()[..good.len() / 2].to_vec(),
            400,
            "not an SNS message",
        ),
        (
            sns_headers("Notification").to_vec(),
            invalid_utf8,
            400,
            "not an SNS message",
        ),
        (
            sns_headers("Notification").to_vec(),
            vec![b' '; 5000],
            413,
            "4096 bytes",
        ),
        (
            sns_headers("SubscriptionConfirmation").to_vec(),
            good.clone().into_bytes(),
            400,
            "does not match Type",
        ),
        (
            sns_headers("Notification").to_vec(),
            br#"{"Type":"Notification"}"#.to_vec(),
            400,
            "has no Message",
        ),
        (
            sns_headers("Notification").to_vec(),
            stale.into_bytes(),
            401,
            "outside the 3900s allowed",
        ),
        (
            vec![
                ("content-type", TEXT_PLAIN),
                ("x-amz-sns-rawdelivery", "true"),
            ],
            b"fine".to_vec(),
            400,
            "raw message delivery",
        ),
    ];
    check_refused(&url, cases).await;
    // Without any content type, as some proxies forward it, the message is still read.
    let (status, answer) = post(&url, &[], good).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    server.running.stop().await;
}

/// The documentation samples carry placeholder signatures ("EXAMPLE…"), and the real
/// captured ones name certificates nobody kept: they go through a source that does
/// not check signatures, at clocks near their timestamps. Topics, hosts, ages and the
/// confirmation GET are still checked.
#[tokio::test]
async fn documentation_and_captured_samples_through_a_test_source() {
    let slack = SlackFake::start().await;
    let fake = FakeAws::start().await;
    let topics = [
        "arn:aws:sns:us-west-2:123456789012:MyTopic",
        "arn:aws:sns:eu-west-1:918057160339:55hubs-mautic-test",
        "arn:aws:sns:us-west-2:486751131363:ses-complaint",
    ];
    let sources = sns_source("sns-docs", &fake, &topics, "verify_signatures = false");
    let rules = [
        rule("aws.sns_unsubscribe_confirmation", &["topic", "region"]),
        rule("ses.bounce", &["topic", "domain", "reason", "bounce_type"]),
        rule("ses.spamreport", &["topic", "domain", "feedback_type"]),
    ]
    .concat();
    let (now, clock) = settable(0);
    let server = start_server(&config(&slack, &sources, &rules), clock).await;
    let url = format!("{}/ingest/sns-docs", server.base);

    // (file, clock, message type, accepted, duplicates, confirmation GETs so far,
    // firing messages so far: each is awaited before the clock moves on, since rules
    // evaluate at the clock's time)
    let table = [
        (
            "aws/sns_subscription_confirmation_docs.json",
            "2012-04-26T20:50:00Z",
            "SubscriptionConfirmation",
            1,
            0,
            1,
            0,
        ),
        // The documentation's "notification" example is the same confirmation.
        (
            "aws/sns_notification_docs.json",
            "2012-04-26T20:50:00Z",
            "SubscriptionConfirmation",
            0,
            1,
            2,
            0,
        ),
        (
            "aws/sns_unsubscribe_confirmation_docs.json",
            "2012-04-26T20:50:00Z",
            "UnsubscribeConfirmation",
            1,
            0,
            2,
            1,
        ),
        (
            "aws/sns_subscription_confirmation_real_eu_west_1.json",
            "2016-08-17T07:20:00Z",
            "SubscriptionConfirmation",
            1,
            0,
            3,
            1,
        ),
        (
            "other/ses_sns_bounce_real_eu_west_1.json",
            "2016-08-17T07:50:00Z",
            "Notification",
            1,
            0,
            3,
            2,
        ),
        (
            "other/ses_sns_complaint_mailbox_simulator.json",
            "2017-07-21T19:00:00Z",
            "Notification",
            1,
            0,
            3,
            3,
        ),
    ];
    for (file, at, kind, accepted, duplicates, confirmations, firing) in table {
        now.store(ms(at), Ordering::SeqCst);
        let (status, answer) = post(&url, &sns_headers(kind), sample(file)).await;
        assert_eq!(status, 200, "{file}: {answer}");
        assert_eq!(
            (answer["accepted"].as_u64(), answer["duplicates"].as_u64()),
            (Some(accepted), Some(duplicates)),
            "{file}: {answer}"
        );
        assert_eq!(fake.confirmations().len(), confirmations, "{file}");
        slack_texts(&slack, firing).await;
    }
    let hosts: Vec<String> = fake.confirmations().into_iter().map(|s| s.host).collect();
    assert_eq!(
        hosts,
        [
            "sns.us-west-2.amazonaws.com",
            "sns.us-west-2.amazonaws.com",
            "sns.eu-west-1.amazonaws.com"
        ]
    );
    let captured: Value = serde_json::from_slice(&sample(
        "aws/sns_subscription_confirmation_real_eu_west_1.json",
    ))
    .unwrap();
    let token = captured["Token"].as_str().unwrap();
    assert_eq!(token.len(), 256);
    assert!(
        fake.confirmations()[2]
            .path
            .ends_with(&format!("&Token={token}"))
    );
    let texts = slack_texts(&slack, 3).await;
    assert_eq!(
        texts,
        [
            "Firing [warning]: aws.sns_unsubscribe_confirmation topic=MyTopic region=us-west-2",
            "Firing [warning]: ses.bounce topic=55hubs-mautic-test domain=nope.com reason=5.1.1 \
             bounce_type=bounce",
            "Firing [warning]: ses.spamreport topic=ses-complaint domain=simulator.amazonses.com \
             feedback_type=abuse",
        ]
    );

    // Ages are still checked: the documentation sample a day later is stale.
    now.store(ms("2012-04-27T20:50:00Z"), Ordering::SeqCst);
    let (status, _) = post(
        &url,
        &sns_headers("UnsubscribeConfirmation"),
        sample("aws/sns_unsubscribe_confirmation_docs.json"),
    )
    .await;
    assert_eq!(status, 401);
    server.running.stop().await;
}

/// With signatures checked, the captured confirmation cannot pass on a certificate
/// other than the one it was signed with (the real one's key is not among the samples).
#[tokio::test]
async fn the_captured_confirmation_fails_against_another_certificate() {
    let slack = SlackFake::start().await;
    let fake = FakeAws::start().await;
    fake.serve(
        "/SimpleNotificationService-bb750dd426d95ee9390147a5624348ee.pem",
        sample(REAL_CERT),
    );
    let sources = sns_source(
        "sns-captured",
        &fake,
        &["arn:aws:sns:eu-west-1:918057160339:55hubs-mautic-test"],
        "max_message_age = \"3000d\"",
    );
    // Within the served certificate's validity, and within max_message_age.
    let (_, clock) = settable(ms("2022-01-01T00:00:00Z"));
    let server = start_server(&config(&slack, &sources, ""), clock).await;
    let (status, answer) = post(
        &format!("{}/ingest/sns-captured", server.base),
        &sns_headers("SubscriptionConfirmation"),
        sample("aws/sns_subscription_confirmation_real_eu_west_1.json"),
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        answer["error"],
        "source \"sns-captured\": signature does not verify"
    );
    assert_eq!(
        fake.confirmations(),
        [],
        "an unverified confirmation is never visited"
    );
    server.running.stop().await;
}

#[tokio::test]
async fn eventbridge_api_destination_posts_each_sample() {
    let slack = SlackFake::start().await;
    let sources = "[sources.eb]\ntype = \"eventbridge\"\napi_key_header = \"x-api-key\"\n\
                   api_key = \"k3y\"\nmax_body_bytes = 4096\n\
                   [sources.eb-basic]\ntype = \"eventbridge\"\n\
                   username = \"aws\"\npassword = \"pw\"\n";
    let rules = [
        rule("aws.spot_interruption", &["region", "instance_action"]),
        rule("aws.rebalance_recommendation", &["region", "account"]),
        rule("aws.health", &["service", "event_type_code"]),
        rule(
            "aws.autoscaling_lifecycle",
            &["auto_scaling_group", "transition"],
        ),
    ]
    .concat();
    let server = start_server(
        &config(&slack, sources, &rules),
        backchannel::clock::system(),
    )
    .await;
    let url = format!("{}/ingest/eb", server.base);
    let json = ("content-type", "application/json; charset=utf-8");
    let key = ("x-api-key", "k3y");

    let files = [
        "aws/eventbridge_spot_interruption_warning_anth.json",
        "aws/eventbridge_rebalance_recommendation_anth.json",
        "aws/eventbridge_health_test_event_empty_resources.json",
        "aws/eventbridge_asg_terminate_lifecycle_anth.json",
        "aws/eventbridge_asg_warm_pool_launch_lifecycle.json",
    ];
    for file in files {
        let (status, answer) = post(&url, &[json, key], sample(file)).await;
        assert_eq!(
            (status, answer["accepted"].as_u64()),
            (200, Some(1)),
            "{file}: {answer}"
        );
    }
    let texts = slack_texts(&slack, 5).await;
    assert_eq!(
        texts,
        [
            "Firing [warning]: aws.autoscaling_lifecycle auto_scaling_group=my-asg \
             transition=autoscaling:EC2_INSTANCE_LAUNCHING",
            "Firing [warning]: aws.autoscaling_lifecycle \
             auto_scaling_group=testt1.demo-0a20f32c.kops.sh \
             transition=autoscaling:EC2_INSTANCE_TERMINATING",
            "Firing [warning]: aws.health service=AWS_EC2 \
             event_type_code=AWS_EC2_HEALTH_TEST_EVENT",
            "Firing [warning]: aws.rebalance_recommendation region=us-east-1 account=123456789012",
            "Firing [warning]: aws.spot_interruption region=us-east-1 instance_action=terminate",
        ]
    );
    let (status, answer) = post(&url, &[json, key], sample(files[0])).await;
    assert_eq!(
        (status, answer["duplicates"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );

    let spot = sample(files[0]);
    let mut invalid = spot.clone();
    invalid[10] = 0xff;
    let cases: Vec<Refused> = vec![
        (vec![json], spot.clone(), 401, "missing x-api-key header"),
        (
            vec![json, ("x-api-key", "k3y-not")],
            spot.clone(),
            401,
            "wrong x-api-key header",
        ),
        (
            vec![("content-type", "multipart/form-data; boundary=b"), key],
            spot.clone(),
            415,
            "not JSON",
        ),
        (
            vec![json, key],
            spot[..spot.len() - 20].to_vec(),
            400,
            "body is",
        ),
        (vec![json, key], invalid, 400, "invalid UTF-8"),
        (vec![json, key], vec![b' '; 5000], 413, "4096 bytes"),
        (
            vec![json, key],
            br#"{"Type":"Notification"}"#.to_vec(),
            400,
            "no \"detail-type\"",
        ),
    ];
    check_refused(&url, cases).await;

    // Basic auth from the API destination's connection.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("aws:pw")
    );
    let basic_url = format!("{}/ingest/eb-basic", server.base);
    let (status, _) = post(&basic_url, &[json, ("authorization", &basic)], spot.clone()).await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &basic_url,
        &[json, ("authorization", "Basic YXdzOnB4")],
        spot,
    )
    .await;
    assert_eq!(status, 401);
    server.running.stop().await;
}
