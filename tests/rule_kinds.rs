//! The `absence` and `nearing_limit` rule kinds through the real server: a source gone
//! silent is reported, and its return resolves the alert; a quota reading near its limit
//! (or rising towards it) fires, and one back under the bar resolves.

mod support;

use std::time::Duration;

use backchannel::clock;
use support::{SlackFake, start_server};

fn config(fake: &SlackFake, rules: &str) -> String {
    format!(
        r##"
[server]
eval_interval = "50ms"
[store]
path = "{{db}}"
journal_retention = "1h"
[sources.sendgrid]
type = "sendgrid"
[sources.upstream]
type = "webhook"
[contacts.slack]
type = "slack"
token = "xoxb-test-token"
channel = "#alerts"
api_url = "{}"
[[routes]]
contacts = ["slack"]
{rules}
"##,
        fake.api_url()
    )
}

async fn post_processed(server: &support::TestServer, id: &str) {
    let batch = format!(
        r#"[{{"event":"processed","email":"a@one.example","timestamp":1700000000,
              "sg_event_id":"{id}","sg_message_id":"m-{id}"}}]"#
    );
    let reply = server
        .client
        .post(&format!("{}/ingest/sendgrid", server.base), &[], batch)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_goes_silent_is_reported_and_its_return_resolves() {
    let fake = SlackFake::start().await;
    let rules = r#"
[[rules]]
name = "sendgrid-silent"
kind = "absence"
match = { sources = ["sendgrid"] }
window = "600ms"
severity = "critical"
summary = "No SendGrid events: {{facts.measure}}"
"#;
    let server = start_server(&config(&fake, rules), clock::system()).await;
    // Events keep the alert quiet.
    for n in 0..4 {
        post_processed(&server, &format!("e{n}")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
    // Then silence for longer than the window.
    let firing = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    let text = firing[0].body["text"].as_str().unwrap().to_string();
    assert!(text.contains("No SendGrid events: no event for"), "{text}");
    assert_eq!(firing[0].path, "/api/chat.postMessage");
    // Still silent: no second message (one notification until it changes).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.requests().len(), 1, "{:#?}", fake.requests());
    // The source speaks again: the alert resolves by updating its message.
    post_processed(&server, "back").await;
    let both = fake.wait_for_ok(2, Duration::from_secs(10)).await;
    assert_eq!(both[1].path, "/api/chat.update", "{:#?}", both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_never_speaks_is_reported_too() {
    let fake = SlackFake::start().await;
    let rules = r#"
[[rules]]
name = "sendgrid-never"
kind = "absence"
match = { kinds = ["sendgrid.processed"] }
window = "300ms"
"#;
    let _server = start_server(&config(&fake, rules), clock::system()).await;
    let firing = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    assert!(
        firing[0].body.to_string().contains("sendgrid-never"),
        "{}",
        firing[0].body
    );
}

async fn post_quota(server: &support::TestServer, id: &str, value: f64) {
    let body = format!(
        r#"{{"kind":"acme.quota","id":"{id}","value":{value},"limit":10000,
             "labels":{{"quota":"events-per-day"}}}}"#
    );
    let reply = server
        .client
        .post(&format!("{}/ingest/upstream", server.base), &[], body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_near_its_limit_fires_and_resolves_when_usage_drops() {
    let fake = SlackFake::start().await;
    let rules = r#"
[[rules]]
name = "upstream-quota"
kind = "nearing_limit"
match = { sources = ["upstream"], kinds = ["acme.quota"] }
group_by = ["quota"]
window = "1h"
fraction = 0.9
summary = "Quota {{labels.quota}}: {{facts.measure}}"
"#;
    let server = start_server(&config(&fake, rules), clock::system()).await;
    post_quota(&server, "q1", 5000.0).await;
    post_quota(&server, "q2", 8900.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
    post_quota(&server, "q3", 9100.0).await;
    let firing = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    let text = firing[0].body["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("Quota events-per-day: 9100 of 10000 (91%)"),
        "{text}"
    );
    // 7500 is above 0.9 * 0.8 = 72% of the limit: still firing (hysteresis).
    post_quota(&server, "q4", 7500.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests().len(), 1, "{:#?}", fake.requests());
    // A new day: usage is back near zero.
    post_quota(&server, "q5", 200.0).await;
    let both = fake.wait_for_ok(2, Duration::from_secs(10)).await;
    assert_eq!(both[1].path, "/api/chat.update", "{:#?}", both);
}
