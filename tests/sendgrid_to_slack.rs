//! SendGrid batches through the real server to a fake Slack: the main job end to end,
//! and the field cases about signatures (B01), duplicates (B25), Slack limits (B17)
//! and rate limits (B21).

mod support;

use std::time::Duration;

use backchannel::clock;
use serde_json::Value;
use support::{Answer, SlackFake, sample, start_server};

const B01_KEY: &str = concat!(
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHneF0CQpGdSG3+GvUAFLRW2luYiXTq/v/k",
    "RZcfTWFMXlvA5d64WOkoVkXN/jETCrt31ZFMyv3yJ7gIRQ1cmr2A=="
);
const B01_SIGNATURE: &str = concat!(
    "MEQCID7yvVdK8b7mmFh8/i5jBPtIDAcLL3gfIMeTk5q8RHn2AiBubu3V+W+flsmB1DHhnS",
    "KW9LBZgUhy5juiAnpjtI56Bg=="
);
// The 309 bytes exactly as SendGrid batches them: CR LF after each event.
const B01_BODY: &str = concat!(
    r#"[{"email":"a@example.com","event":"delivered","sg_event_id":"ZXZ0LTAwMQ","#,
    r#""sg_message_id":"msg-001.filter0001","timestamp":1699999990},"#,
    "\r\n",
    r#"{"email":"b@example.com","event":"bounce","reason":"550 5.1.1 mailbox unavailable","#,
    r#""sg_event_id":"ZXZ0LTAwMg","sg_message_id":"msg-002.filter0001","#,
    r#""timestamp":1699999991}]"#,
    "\r\n"
);

/// A config with one SendGrid source, the given rules, and every alert routed to a
/// Slack contact pointed at the fake.
fn config(slack: &str, source_extra: &str, rules: &str) -> String {
    format!(
        r#"
[server]
eval_interval = "100ms"
[store]
path = "{{db}}"
[links]
trace_url = "https://traces.example/trace/{{trace_id}}"
[sources.sendgrid]
type = "sendgrid"
{source_extra}
[contacts.slack]
type = "slack"
{slack}
delivery_deadline = "1h"
[[routes]]
contacts = ["slack"]
repeat_interval = "4h"
{rules}
"#
    )
}

fn api(fake: &SlackFake) -> String {
    format!(
        "token = \"xoxb-test-token\"\nchannel = \"#email-alerts\"\napi_url = \"{}\"",
        fake.api_url()
    )
}

const SPAM_RULE: &str = r#"
[[rules]]
name = "spam"
kind = "each"
match = { kinds = ["sendgrid.spamreport"] }
group_by = ["domain"]
window = "1h"
summary = "Spam complaint from a recipient at {{labels.domain}}"
"#;

/// A server whose only rule is `SPAM_RULE` with `window`, alerting the Web API fake.
async fn spam_server(fake: &SlackFake, window: &str) -> support::TestServer {
    let rules = SPAM_RULE.replace("window = \"1h\"", &format!("window = \"{window}\""));
    start_server(&config(&api(fake), "", &rules), clock::system()).await
}

/// Posts one spam report from `a@one.example` with event id `id`; it must be accepted.
async fn post_spam(server: &support::TestServer, id: &str) {
    let batch = format!(
        r#"[{{"event":"spamreport","email":"a@one.example","timestamp":1700000000,
              "sg_event_id":"{id}"}}]"#
    );
    let reply = server
        .client
        .post(&format!("{}/ingest/sendgrid", server.base), &[], batch)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// The top-level `text` of a request the fake received.
fn text_of(request: &support::Recorded) -> &str {
    request.body["text"].as_str().unwrap_or_default()
}

fn section_texts(body: &Value) -> Vec<String> {
    body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "section")
        .filter_map(|b| b["text"]["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn documented_batch_fires_spam_alert_in_slack() {
    let fake = SlackFake::start().await;
    // Metrics are process-wide, so each test that reads them has its own source id.
    let text =
        config(&api(&fake), "", SPAM_RULE).replace("[sources.sendgrid]", "[sources.sg-docs]");
    let server = start_server(&text, clock::system()).await;
    let url = format!("{}/ingest/sg-docs", server.base);

    let reply = server
        .client
        .post(
            &url,
            &[],
            sample("sendgrid/docs_all_event_types_batch.json"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["accepted"], 11, "{answer}");
    assert_eq!(answer["duplicates"], 0);

    let sent = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].path, "/api/chat.postMessage");
    assert_eq!(
        sent[0].authorization.as_deref(),
        Some("Bearer xoxb-test-token")
    );
    let body = &sent[0].body;
    assert_eq!(body["channel"], "#email-alerts");
    assert_eq!(
        body["text"],
        "Firing [warning]: Spam complaint from a recipient at test.com"
    );
    assert_eq!(body["blocks"][0]["type"], "header");
    assert!(
        body["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .ends_with("Spam complaint from a recipient at test.com")
    );
    let fields: Vec<&str> = body["blocks"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"*domain*\ntest.com"), "{fields:?}");
    assert!(
        !body.to_string().contains("example@test.com"),
        "the address never reaches a label or message"
    );

    // The same batch again is all duplicates and sends nothing new.
    let again = server
        .client
        .post(
            &url,
            &[],
            sample("sendgrid/docs_all_event_types_batch.json"),
        )
        .await
        .json();
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(11))
    );
    let metrics = server
        .client
        .get(&format!("{}/metrics", server.base))
        .await
        .text();
    assert!(
        metrics.contains("backchannel_events_duplicate_total{source=\"sg-docs\"} 11"),
        "{metrics}"
    );
    assert_eq!(fake.requests().len(), 1);
    server.running.stop().await;
}

#[tokio::test]
async fn every_sample_is_accepted_or_answered_with_a_reason() {
    let fake = SlackFake::start().await;
    let text = config(&api(&fake), "", "").replace("[sources.sendgrid]", "[sources.sg-samples]");
    let server = start_server(&text, clock::system()).await;
    let url = format!("{}/ingest/sg-samples", server.base);
    let (mut accepted, mut duplicates) = (0, 0);
    for entry in std::fs::read_dir(support::samples().join("sendgrid")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let reply = server
            .client
            .post(&url, &[], std::fs::read(&path).unwrap())
            .await;
        assert_eq!(reply.status, 200, "{}: {}", path.display(), reply.text());
        assert_eq!(
            reply.json()["skipped"],
            0,
            "{}: {}",
            path.display(),
            reply.text()
        );
        accepted += reply.json()["accepted"].as_u64().unwrap();
        duplicates += reply.json()["duplicates"].as_u64().unwrap();
    }
    // The documentation's "bounce" and "blocked" examples share one sg_event_id.
    assert_eq!((accepted, duplicates), (23, 1));

    for (body, status, reason) in [
        (&b"{\"event\":"[..], 400, "body is not a valid event"),
        (b"\"just a string\"", 400, "expected a JSON array"),
        (b"", 400, "empty body"),
        (
            b"[{\"email\":\"x@example.com\"}]",
            400,
            "no event in the batch is valid",
        ),
    ] {
        let reply = server.client.post(&url, &[], body.to_vec()).await;
        assert_eq!(reply.status, status, "{}", reply.text());
        assert!(
            reply.json()["error"].as_str().unwrap().contains(reason),
            "{}",
            reply.text()
        );
    }
    let reply = server
        .client
        .post(&format!("{}/ingest/nope", server.base), &[], b"[]".to_vec())
        .await;
    assert_eq!(reply.status, 404);

    // One malformed event is skipped and counted; its neighbours are kept.
    let mixed =
        br#"[{"event":"processed","email":"a@example.com","timestamp":1,"sg_event_id":"m1"}, 7,
        {"event":"delivered","email":"a@example.com","timestamp":2,"sg_event_id":"m2"}]"#;
    let reply = server.client.post(&url, &[], mixed.to_vec()).await.json();
    assert_eq!(
        (reply["accepted"].as_u64(), reply["skipped"].as_u64()),
        (Some(2), Some(1)),
        "{reply}"
    );

    let metrics = server
        .client
        .get(&format!("{}/metrics", server.base))
        .await
        .text();
    assert!(
        metrics.contains(
            "backchannel_requests_rejected_total{source=\"sg-samples\",reason=\"bad_request\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("backchannel_events_skipped_total{source=\"sg-samples\"}"),
        "{metrics}"
    );
    server.running.stop().await;
}

#[tokio::test]
async fn body_limit_answers_413() {
    let fake = SlackFake::start().await;
    let text = config(&api(&fake), "", "").replace("[server]", "[server]\nmax_body_bytes = 2048");
    let server = start_server(&text, clock::system()).await;
    let reply = server
        .client
        .post(
            &format!("{}/ingest/sendgrid", server.base),
            &[],
            vec![b' '; 4096],
        )
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.json()["error"].as_str().unwrap().contains("sendgrid"));
    server.running.stop().await;
}

/// Field case B01: the signature covers the raw bytes, CR LF included, and is checked
/// before parsing; any change to the bytes is refused and nothing is ingested.
#[tokio::test]
async fn b01_signature_over_raw_body_bytes() {
    let fake = SlackFake::start().await;
    let source = format!("verification_key = \"{B01_KEY}\"\nmax_timestamp_skew = \"5m\"");
    let text = config(&api(&fake), &source, "").replace("[sources.sendgrid]", "[sources.sg-b01]");
    let server = start_server(&text, clock::fixed(1_700_000_000_000)).await;
    let url = format!("{}/ingest/sg-b01", server.base);
    assert_eq!(B01_BODY.len(), 309);
    let headers = [
        ("x-twilio-email-event-webhook-timestamp", "1700000000"),
        ("x-twilio-email-event-webhook-signature", B01_SIGNATURE),
    ];

    let mut flipped = B01_BODY.as_bytes().to_vec();
    flipped[40] ^= 0x01;
    let compact = serde_json::to_vec(&serde_json::from_str::<Value>(B01_BODY).unwrap()).unwrap();
    let no_crlf = B01_BODY.trim_end().as_bytes().to_vec();
    for tampered in [flipped, compact, no_crlf] {
        let reply = server.client.post(&url, &headers, tampered).await;
        assert_eq!(reply.status, 401, "{}", reply.text());
        assert_eq!(
            reply.json()["error"],
            "source \"sg-b01\": signature does not verify"
        );
    }
    let unsigned = server.client.post(&url, &[], B01_BODY).await;
    assert_eq!(unsigned.status, 401);
    let stale = server
        .client
        .post(
            &url,
            &[
                ("x-twilio-email-event-webhook-timestamp", "1699999000"),
                headers[1],
            ],
            B01_BODY,
        )
        .await;
    assert_eq!(
        stale.status, 401,
        "a different timestamp changes the signed bytes"
    );
    assert_eq!(
        server.running.store.seen_count().await.unwrap(),
        0,
        "nothing ingested"
    );

    let reply = server.client.post(&url, &headers, B01_BODY).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], 2);
    let metrics = server
        .client
        .get(&format!("{}/metrics", server.base))
        .await
        .text();
    assert!(
        metrics.contains("{source=\"sg-b01\",reason=\"unauthorized\"} 5"),
        "{metrics}"
    );
    server.running.stop().await;
}

/// The SendGrid SDKs' published vectors, posted over HTTP at their signing time.
#[tokio::test]
async fn sdk_signature_vectors_over_http() {
    let fake = SlackFake::start().await;
    let key = concat!(
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfS",
        "mpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
    );
    let source = format!("verification_key = \"{key}\"");
    let server = start_server(
        &config(&api(&fake), &source, ""),
        clock::fixed(1_600_112_502_000),
    )
    .await;
    let url = format!("{}/ingest/sendgrid", server.base);
    let dir = support::samples().join("sendgrid/signed_event_webhook");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let vector: Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        if vector["public_key"] != key {
            // The wrong-key vector's payload and signature are valid under this key;
            // the unit tests check it against its own key.
            continue;
        }
        let headers = [
            (
                "x-twilio-email-event-webhook-timestamp",
                vector["timestamp"].as_str().unwrap(),
            ),
            (
                "x-twilio-email-event-webhook-signature",
                vector["signature"].as_str().unwrap(),
            ),
        ];
        let reply = server
            .client
            .post(
                &url,
                &headers,
                vector["payload"].as_str().unwrap().to_string(),
            )
            .await;
        let expect_ok = vector["expected_valid"].as_bool().unwrap();
        assert_eq!(
            reply.status == 200,
            expect_ok,
            "{}: {}",
            vector["description"],
            reply.text()
        );
        if !expect_ok {
            assert_eq!(reply.status, 401, "{}", vector["description"]);
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
    server.running.stop().await;
}

/// Field case B25: redeliveries, with the same or a different `sg_event_id`, count once;
/// events without `sg_event_id` are not collapsed into one.
#[tokio::test]
async fn b25_duplicates_count_once() {
    let fake = SlackFake::start().await;
    let rules = r#"
[[rules]]
name = "bounces"
kind = "threshold"
match = { kinds = ["sendgrid.bounce"] }
group_by = ["domain"]
window = "10m"
threshold = 3
[[rules]]
name = "unsubscribes"
kind = "each"
match = { kinds = ["sendgrid.group_unsubscribe"] }
summary = "{{facts.count}} group unsubscribes"
"#;
    let server = start_server(&config(&api(&fake), "", rules), clock::system()).await;
    let url = format!("{}/ingest/sendgrid", server.base);
    let batches = [
        r#"[{"email":"b@example.com","event":"bounce","sg_event_id":"ZXZ0LTAwMg","sg_message_id":"msg-002.filter0001","timestamp":1699999991}]"#,
        r#"[{"email":"b@example.com","event":"bounce","sg_event_id":"ZXZ0LTAwMg","sg_message_id":"msg-002.filter0001","timestamp":1699999991}]"#,
        r#"[{"email":"b@example.com","event":"bounce","sg_event_id":"ZXZ0LTA5OQ","sg_message_id":"msg-002.filter0001","timestamp":1699999991}]"#,
        r#"[{"email":"c@example.com","event":"group_unsubscribe","asm_group_id":7,"timestamp":1699999995},
 {"email":"d@example.com","event":"group_unsubscribe","asm_group_id":7,"timestamp":1699999996}]"#,
    ];
    let mut answers = Vec::new();
    for batch in batches {
        let reply = server.client.post(&url, &[], batch).await;
        assert_eq!(reply.status, 200);
        let json = reply.json();
        answers.push((
            json["accepted"].as_u64().unwrap(),
            json["duplicates"].as_u64().unwrap(),
        ));
    }
    assert_eq!(answers, vec![(1, 0), (0, 1), (0, 1), (2, 0)]);

    // The runner handles events in order: once the unsubscribe alert is out, the
    // bounces have been counted, and they were one, so no bounce alert exists.
    let sent = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    assert_eq!(
        sent[0].body["text"],
        "Firing [warning]: 2 group unsubscribes"
    );
    let alerts = server.running.store.load_alerts().await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "unsubscribes");
    server.running.stop().await;
}

/// Field case B17: a description over Slack's 3000-character section limit and a
/// summary over the 150-character header limit still deliver, cut with `…`.
#[tokio::test]
async fn b17_long_text_fits_slack_limits() {
    let fake = SlackFake::start().await;
    let rules = r#"
[[rules]]
name = "JobFailed"
kind = "each"
match = { kinds = ["sendgrid.spamreport"] }
severity = "critical"
summary = "{{event.summary}}"
description = "{{event.description}}"
"#;
    let server = start_server(&config(&api(&fake), "", rules), clock::system()).await;
    let event = serde_json::json!([{
        "event": "spamreport", "email": "x@example.com", "timestamp": 1_700_000_000,
        "sg_event_id": "long-1",
        "summary": "S".repeat(200), "description": "x".repeat(3500),
    }]);
    let reply = server
        .client
        .post(
            &format!("{}/ingest/sendgrid", server.base),
            &[],
            event.to_string(),
        )
        .await;
    assert_eq!(reply.status, 200);

    let sent = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    let body = &sent[0].body;
    let header = body["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        header.chars().count() <= 150 && header.ends_with('…'),
        "{header}"
    );
    let sections = section_texts(body);
    assert!(
        sections.iter().all(|t| t.chars().count() <= 3000),
        "{:?}",
        sections.iter().map(|s| s.len()).collect::<Vec<_>>()
    );
    let description = sections
        .iter()
        .find(|t| t.starts_with("xxx"))
        .expect("description section");
    assert_eq!(description.chars().count(), 3000);
    assert!(description.ends_with('…'));
    assert!(body["text"].as_str().unwrap().chars().count() <= 40_000);
    // Slack has answered; the outbox marks the row sent right after.
    let start = std::time::Instant::now();
    while server.running.store.outbox_counts().await.unwrap().sent != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never marked sent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.running.stop().await;
}

/// Field case B21: a 429 with `Retry-After: 2` pauses the whole contact for 2 s, the
/// notification is then delivered exactly once, and other notifications wait too.
#[tokio::test]
async fn b21_rate_limit_honours_retry_after() {
    let fake = SlackFake::start().await;
    fake.script([Answer::RateLimited { secs: 2 }]);
    let slack = format!("webhook_url = \"{}\"", fake.webhook_url());
    let server = start_server(&config(&slack, "", SPAM_RULE), clock::system()).await;
    let batch = r#"[
        {"event":"spamreport","email":"a@one.example","timestamp":1700000000,"sg_event_id":"r1"},
        {"event":"spamreport","email":"a@two.example","timestamp":1700000000,"sg_event_id":"r2"}]"#;
    let reply = server
        .client
        .post(&format!("{}/ingest/sendgrid", server.base), &[], batch)
        .await;
    assert_eq!(reply.status, 200);

    let sent = fake.wait_for_ok(2, Duration::from_secs(15)).await;
    let requests = fake.requests();
    assert_eq!(
        requests.len(),
        3,
        "one refused attempt, then each notification once"
    );
    assert_eq!(requests[0].answered, "429");
    for delivered in &sent {
        let waited = delivered.at.duration_since(requests[0].at);
        assert!(
            waited >= Duration::from_millis(1900),
            "sent {waited:?} after the 429"
        );
    }
    let mut texts: Vec<&str> = sent
        .iter()
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            "Firing [warning]: Spam complaint from a recipient at one.example",
            "Firing [warning]: Spam complaint from a recipient at two.example"
        ]
    );
    let start = std::time::Instant::now();
    let mut counts = server.running.store.outbox_counts().await.unwrap();
    while counts.sent < 2 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        counts = server.running.store.outbox_counts().await.unwrap();
    }
    assert_eq!((counts.sent, counts.pending, counts.dead), (2, 0, 0));
    server.running.stop().await;
}

/// Slack refusing the blocks gets the same notification as plain text; an error that
/// would repeat (a 4xx other than 429) is not retried; a rate limit that outlasts the
/// delivery deadline ends as a dead letter with its reason, never a silent drop.
#[tokio::test]
async fn refusals_fall_back_or_become_dead_letters() {
    let fake = SlackFake::start().await;
    let text = config(&api(&fake), "", SPAM_RULE)
        .replace("delivery_deadline = \"1h\"", "delivery_deadline = \"3s\"");
    let server = start_server(&text, clock::system()).await;
    let url = format!("{}/ingest/sendgrid", server.base);
    let post = |domain: &'static str| {
        let body = format!(
            r#"[{{"event":"spamreport","email":"a@{domain}","timestamp":1,
                  "sg_event_id":"{domain}"}}]"#
        );
        let client = server.client.clone();
        let url = url.clone();
        async move { assert_eq!(client.post(&url, &[], body).await.status, 200) }
    };
    let wait_dead = |count: i64| {
        let store = server.running.store.clone();
        async move {
            let start = std::time::Instant::now();
            while store.outbox_counts().await.unwrap().dead < count {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "waiting for {count} dead letters"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    fake.script([Answer::Error {
        code: "invalid_blocks",
    }]);
    post("one.example").await;
    let sent = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    assert!(sent[0].body.get("blocks").is_none(), "{}", sent[0].body);
    assert_eq!(
        sent[0].body["text"],
        "[firing] [warning] spam: Spam complaint from a recipient at one.example"
    );

    fake.script([Answer::Error {
        code: "channel_not_found",
    }]);
    post("two.example").await;
    wait_dead(1).await;

    fake.script([
        Answer::RateLimited { secs: 2 },
        Answer::RateLimited { secs: 2 },
    ]);
    post("three.example").await;
    wait_dead(2).await;

    let dead = server.running.store.dead_letters().await.unwrap();
    assert!(
        dead[0]
            .2
            .starts_with("gave up after 2 attempts: rate limited"),
        "{dead:?}"
    );
    assert_eq!(dead[1].2, "slack answered channel_not_found");
    let answered: Vec<String> = fake.requests().iter().map(|r| r.answered.clone()).collect();
    assert_eq!(
        answered,
        ["invalid_blocks", "ok", "channel_not_found", "429", "429"]
    );
    server.running.stop().await;
}

/// Resolution replaces the firing message (`chat.update` on its channel and ts), and
/// the trace link comes from the event's `traceparent`.
#[tokio::test]
async fn resolution_updates_the_original_message() {
    let fake = SlackFake::start().await;
    let server = spam_server(&fake, "1s").await;
    let batch = r#"[{"event":"spamreport","email":"a@one.example","timestamp":1700000000,
        "sg_event_id":"t1",
        "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}]"#;
    server
        .client
        .post(&format!("{}/ingest/sendgrid", server.base), &[], batch)
        .await;

    let sent = fake.wait_for_ok(2, Duration::from_secs(10)).await;
    assert_eq!(sent[0].path, "/api/chat.postMessage");
    assert!(
        sent[0].body.to_string().contains(
            "<https://traces.example/trace/4bf92f3577b34da6a3ce929d0e0e4736|View the trace"
        )
    );
    assert_eq!(sent[1].path, "/api/chat.update");
    assert_eq!(sent[1].body["channel"], "C0ALERTS1");
    assert_eq!(sent[1].body["ts"], "1700000000.000101");
    assert!(
        sent[1].body["text"]
            .as_str()
            .unwrap()
            .starts_with("Resolved [warning]")
    );
    server.running.stop().await;
}

/// A client that never finishes its headers is disconnected, and others are still served.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let fake = SlackFake::start().await;
    let text = config(&api(&fake), "", "").replace(
        "[server]",
        "[server]\nheader_read_timeout = \"300ms\"\nmax_connections = 4",
    );
    let server = start_server(&text, clock::system()).await;
    let addr = server.running.addr;

    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /ingest/sendgrid HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was never closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // More idle connections than the cap: a new client waits, then is served once the
    // idle ones are cut off.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let reply = server.client.get(&format!("{}/healthz", server.base)).await;
    assert_eq!(reply.status, 200);
    server.running.stop().await;
}

/// A repeat goes in the thread of the first message (and to the channel), so that the
/// resolution still updates the message that announced the alert, not the last reminder.
#[tokio::test]
async fn repeats_thread_under_the_first_message_which_the_resolution_updates() {
    let fake = SlackFake::start().await;
    let rules = SPAM_RULE.replace("window = \"1h\"", "window = \"2500ms\"");
    let text = config(&api(&fake), "", &rules)
        .replace("repeat_interval = \"4h\"", "repeat_interval = \"1s\"");
    let server = start_server(&text, clock::system()).await;
    post_spam(&server, "p1").await;

    let start = std::time::Instant::now();
    while !fake.requests().iter().any(|r| r.path == "/api/chat.update") {
        assert!(start.elapsed() < Duration::from_secs(15), "never resolved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = fake.requests();
    let first = &sent[0];
    assert_eq!(first.path, "/api/chat.postMessage");
    assert!(first.body.get("thread_ts").is_none(), "{}", first.body);
    let first_ts = "1700000000.000101";

    let reminders = &sent[1..sent.len() - 1];
    assert!(!reminders.is_empty(), "{sent:#?}");
    for reminder in reminders {
        assert_eq!(reminder.path, "/api/chat.postMessage");
        assert_eq!(reminder.body["thread_ts"], first_ts);
        assert_eq!(reminder.body["reply_broadcast"], true);
        assert!(
            text_of(reminder).contains("Spam complaint"),
            "{}",
            reminder.body
        );
    }
    let resolution = sent.last().unwrap();
    assert_eq!(resolution.body["ts"], first_ts);
    assert!(text_of(resolution).starts_with("Resolved [warning]"));
    server.running.stop().await;
}

/// A resolution that falls due while its firing message is still being retried waits
/// for it, then updates it: the channel never ends on a stale "Firing".
#[tokio::test]
async fn resolution_waits_for_its_firing_message() {
    let fake = SlackFake::start().await;
    fake.script([Answer::ServerError, Answer::ServerError]);
    let server = spam_server(&fake, "300ms").await;
    post_spam(&server, "w1").await;

    let sent = fake.wait_for_ok(2, Duration::from_secs(30)).await;
    let answered: Vec<String> = fake.requests().iter().map(|r| r.answered.clone()).collect();
    assert_eq!(answered, ["500", "500", "ok", "ok"]);
    for refused in &fake.requests()[..2] {
        assert!(
            refused.body["text"].as_str().unwrap().starts_with("Firing"),
            "{}",
            refused.body
        );
    }
    assert_eq!(sent[0].path, "/api/chat.postMessage");
    assert!(text_of(&sent[0]).starts_with("Firing"));
    assert_eq!(sent[1].path, "/api/chat.update");
    assert_eq!(sent[1].body["ts"], "1700000000.000101");
    assert!(text_of(&sent[1]).starts_with("Resolved"));
    server.running.stop().await;
}

/// Rate limits are paced by their `Retry-After` and do not grow the backoff: a server
/// error after three 429s is retried after the first backoff step (1 to 2 s), not the
/// fourth (8 s or more).
#[tokio::test]
async fn rate_limits_do_not_stretch_the_backoff() {
    let fake = SlackFake::start().await;
    fake.script([
        Answer::RateLimited { secs: 1 },
        Answer::RateLimited { secs: 1 },
        Answer::RateLimited { secs: 1 },
        Answer::ServerError,
    ]);
    let server = start_server(&config(&api(&fake), "", SPAM_RULE), clock::system()).await;
    post_spam(&server, "k1").await;

    let sent = fake.wait_for_ok(1, Duration::from_secs(20)).await;
    let requests = fake.requests();
    let answered: Vec<&str> = requests.iter().map(|r| r.answered.as_str()).collect();
    assert_eq!(answered, ["429", "429", "429", "500", "ok"]);
    let after_error = sent[0].at.duration_since(requests[3].at);
    assert!(
        after_error >= Duration::from_millis(900) && after_error < Duration::from_secs(4),
        "retried {after_error:?} after the 500"
    );
    server.running.stop().await;
}

/// Every refusal says why in a JSON body: a compressed body, a wrong method, an unknown
/// path, and a body that does not arrive within `request_timeout`.
#[tokio::test]
async fn refusals_say_why() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let fake = SlackFake::start().await;
    let text =
        config(&api(&fake), "", "").replace("[server]", "[server]\nrequest_timeout = \"300ms\"");
    let server = start_server(&text, clock::system()).await;
    let url = format!("{}/ingest/sendgrid", server.base);

    let gzip = server
        .client
        .post(&url, &[("content-encoding", "gzip")], "\x1f\u{8b}")
        .await;
    assert_eq!(gzip.status, 415);
    assert_eq!(
        gzip.json()["error"],
        "source \"sendgrid\": content-encoding \"gzip\" is not supported; send the body \
         uncompressed"
    );
    let get = server.client.get(&url).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.json()["error"], "method GET is not allowed here");
    let nowhere = server.client.get(&format!("{}/ingest", server.base)).await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.json()["error"], "no route for /ingest");

    let mut slow = tokio::net::TcpStream::connect(server.running.addr)
        .await
        .unwrap();
    slow.write_all(
        b"POST /ingest/sendgrid HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n[",
    )
    .await
    .unwrap();
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer
            .contains(r#"{"error":"the request took longer than server.request_timeout (300ms)"}"#),
        "{answer}"
    );
    server.running.stop().await;
}

/// An HTTP 200 that says ok in a shape the Slack client does not parse (a proxy's) is a
/// delivery: posting again would duplicate the message. The ts it gives is still the one
/// the resolution updates.
#[tokio::test]
async fn ok_answers_in_an_odd_shape_are_not_posted_again() {
    let fake = SlackFake::start().await;
    fake.script([Answer::OkWithoutMessage, Answer::OkWithoutMessage]);
    let server = spam_server(&fake, "500ms").await;
    post_spam(&server, "o1").await;

    let sent = fake.wait_for_ok(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // room for a wrong retry
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/api/chat.postMessage", "/api/chat.update"]);
    assert_eq!(sent[1].body["ts"], "1700000000.000101");
    let counts = server.running.store.outbox_counts().await.unwrap();
    assert_eq!((counts.sent, counts.pending, counts.dead), (2, 0, 0));
    server.running.stop().await;

    let fake = SlackFake::start().await;
    fake.script([Answer::OkWithoutMessage]);
    let slack = format!("webhook_url = \"{}\"", fake.webhook_url());
    let server = start_server(&config(&slack, "", SPAM_RULE), clock::system()).await;
    post_spam(&server, "o1").await;
    fake.wait_for_ok(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.requests().len(), 1, "{:#?}", fake.requests());
    server.running.stop().await;
}

/// When Slack refuses the resolved rendering of a `chat.update`, the plain-text update
/// sends `"blocks": []`: Slack keeps a message's blocks when none are given, which would
/// leave the firing layout on screen.
#[tokio::test]
async fn plain_text_resolution_clears_the_blocks() {
    let fake = SlackFake::start().await;
    fake.script([
        Answer::Ok,
        Answer::Error {
            code: "invalid_blocks",
        },
    ]);
    let server = spam_server(&fake, "500ms").await;
    post_spam(&server, "c1").await;

    let sent = fake.wait_for_ok(2, Duration::from_secs(10)).await;
    let requests = fake.requests();
    assert_eq!(requests[1].path, "/api/chat.update");
    assert_eq!(requests[1].answered, "invalid_blocks");
    assert_eq!(sent[1].path, "/api/chat.update");
    assert_eq!(sent[1].body["blocks"], serde_json::json!([]));
    assert!(
        text_of(&sent[1]).starts_with("[resolved]"),
        "{}",
        sent[1].body
    );
    server.running.stop().await;
}
