//! The generic `webhook` source through the real server: Standard Webhooks signatures,
//! redeliveries, the format's refusals, and an upstream's events alerting in Slack.

mod support;

use std::sync::Arc;
use std::time::Duration;

use backchannel::clock;
use backchannel::sources::Backchannel;
use backchannel::sources::webhook::{
    Format, ID_HEADER, SIGNATURE_HEADER, SigningSecret, TIMESTAMP_HEADER, Webhook,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::{SlackFake, TestServer, start_server};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW_S: i64 = 1_700_000_000;

/// Header name and value, as `signed` builds them.
type Headers = Vec<(&'static str, String)>;

fn config(fake: &SlackFake, source_extra: &str, rules: &str) -> String {
    format!(
        r##"
[server]
eval_interval = "20ms"
[store]
path = "{{db}}"
[sources.upstream]
type = "webhook"
secret = "{SECRET}"
kind_prefixes = ["acme."]
max_body_bytes = 8192
{source_extra}
[contacts.slack]
type = "slack"
token = "xoxb-test-token"
channel = "#ops"
api_url = "{api}"
delivery_deadline = "1h"
[[routes]]
contacts = ["slack"]
repeat_interval = "3h"
{rules}
"##,
        api = fake.api_url()
    )
}

const DROPPED_RULE: &str = r#"
[[rules]]
name = "upstream-dropped"
kind = "threshold"
match = { kinds = ["acme.events.dropped"] }
group_by = ["reason"]
window = "10m"
threshold = 100
severity = "warning"
summary = "{{facts.count}} events dropped ({{labels.reason}}): {{event.attributes.detail}}"
"#;

/// Headers of a Standard Webhooks delivery of `body`, signed at `timestamp`.
fn signed(id: &str, timestamp: i64, body: &str) -> Headers {
    let secret = SigningSecret::parse(SECRET).unwrap();
    let timestamp = timestamp.to_string();
    vec![
        (ID_HEADER, id.to_string()),
        (TIMESTAMP_HEADER, timestamp.clone()),
        (
            SIGNATURE_HEADER,
            secret.sign(id, &timestamp, body.as_bytes()),
        ),
    ]
}

async fn post_signed(
    server: &TestServer,
    headers: &[(&'static str, String)],
    body: &str,
) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = server
        .client
        .post(
            &format!("{}/ingest/upstream", server.base),
            &headers,
            body.to_string(),
        )
        .await;
    (reply.status, reply.json())
}

#[tokio::test]
async fn signed_events_alert_and_redeliveries_are_duplicates() {
    let fake = SlackFake::start().await;
    let server = start_server(&config(&fake, "", DROPPED_RULE), clock::fixed(NOW_S * 1000)).await;
    let body = json!([
        {"kind": "acme.events.dropped", "time": "2023-11-14T22:13:00Z", "weight": 60,
         "labels": {"reason": "too_many_columns", "dataset": "web"},
         "attributes": {"detail": "events over 2000 columns are dropped"},
         "id": "batch-1", "passthrough": {"request_id": "r-1"}},
        {"kind": "acme.events.dropped", "time": 1_699_999_990_000_i64, "weight": 45,
         "labels": {"reason": "too_many_columns"},
         "attributes": {"detail": "events over 2000 columns are dropped"}},
        {"kind": "acme.quota.used", "value": 90, "limit": 100, "labels": {"plan": "pro"}},
    ])
    .to_string();
    let (status, answer) = post_signed(&server, &signed("msg_1", NOW_S - 10, &body), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["skipped"].as_u64()),
        (Some(3), Some(0))
    );

    let sent = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    assert_eq!(
        sent[0].body["text"],
        "Firing [warning]: 105 events dropped (too_many_columns): events over 2000 columns \
         are dropped"
    );

    // A retry: same id and body, a later timestamp and so a new signature.
    let (status, again) = post_signed(&server, &signed("msg_1", NOW_S - 5, &body), &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(3))
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.requests().len(), 1, "a redelivery alerts nobody again");

    // The same body in a new delivery (a new webhook-id) is new news for the events
    // without their own id; the one with an id stays a duplicate.
    let (status, next) = post_signed(&server, &signed("msg_2", NOW_S - 1, &body), &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        (next["accepted"].as_u64(), next["duplicates"].as_u64()),
        (Some(2), Some(1)),
        "{next}"
    );
    server.running.stop().await;
}

#[tokio::test]
async fn refusals_name_the_reason() {
    let fake = SlackFake::start().await;
    let server = start_server(&config(&fake, "", ""), clock::fixed(NOW_S * 1000)).await;
    let body = r#"{"kind":"acme.events.dropped","labels":{"reason":"x"}}"#;
    let good = signed("msg_2", NOW_S, body);

    let mut tampered = good.clone();
    tampered[0].1 = "msg_3".into();
    let mut rotated = good.clone();
    rotated[2].1 = format!("v1,c2lnbmF0dXJlIGZyb20gdGhlIG9sZCBzZWNyZXQ= {}", good[2].1);
    let cases: Vec<(Headers, String, u16, &str)> = vec![
        (vec![], body.into(), 401, "missing webhook-id header"),
        (
            tampered,
            body.into(),
            401,
            "no v1 signature in webhook-signature matches the body",
        ),
        (
            good.clone(),
            body.replace("x", "y"),
            401,
            "matches the body",
        ),
        (
            signed("msg_2", NOW_S - 301, body),
            body.into(),
            401,
            "more than the 300 s allowed",
        ),
        (
            signed("msg_2", NOW_S + 301, body),
            body.into(),
            401,
            "is -301 s away",
        ),
        (rotated, body.into(), 200, ""),
    ];
    for (headers, body, status, reason) in cases {
        let (got, answer) = post_signed(&server, &headers, &body).await;
        assert_eq!(got, status, "{answer}");
        if status != 200 {
            let error = answer["error"].as_str().unwrap();
            assert!(error.starts_with("source \"upstream\": "), "{error}");
            assert!(error.contains(reason), "{error}");
        }
    }

    let bodies: Vec<(String, u16, &str)> = vec![
        (
            r#"{"kind":"acme.events.dropped""#.into(),
            400,
            "body is not JSON",
        ),
        ("\"text\"".into(), 400, "expected a JSON event object"),
        (
            r#"{"kind":"other.dropped"}"#.into(),
            400,
            "does not start with acme.",
        ),
        (
            format!(
                r#"[{{"kind":"acme.x","labels":{{"note":"{}"}}}}]"#,
                "n".repeat(200)
            ),
            400,
            "no event in the batch is valid",
        ),
        (
            format!(
                r#"{{"kind":"acme.x","attributes":{{"pad":"{}"}}}}"#,
                "p".repeat(9000)
            ),
            413,
            "8192 bytes",
        ),
    ];
    for (body, status, reason) in bodies {
        let (got, answer) = post_signed(&server, &signed("msg_4", NOW_S, &body), &body).await;
        assert_eq!(got, status, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(reason),
            "{answer}"
        );
    }

    // Invalid UTF-8 is refused as a whole, with where it starts.
    let mut bytes = br#"{"kind":"acme.x","labels":{"a":"#.to_vec();
    bytes.extend_from_slice(b"\xc3\x28\"}}");
    // Signed over the exact bytes: the check is over the raw body.
    let signature = SigningSecret::parse(SECRET)
        .unwrap()
        .sign("msg_5", &NOW_S.to_string(), &bytes);
    let reply = server
        .client
        .post(
            &format!("{}/ingest/upstream", server.base),
            &[
                (ID_HEADER, "msg_5"),
                (TIMESTAMP_HEADER, &NOW_S.to_string()),
                (SIGNATURE_HEADER, &signature),
            ],
            bytes.clone(),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains("body is not UTF-8 (byte 31)"),
        "{}",
        reply.text()
    );

    // One bad element of an array is skipped and counted; the others are kept.
    let mixed =
        r#"[{"kind":"acme.ok"},{"kind":"acme.bad","labels":{"source":"x"}},{"kind":"acme.ok2"}]"#;
    let (status, answer) = post_signed(&server, &signed("msg_6", NOW_S, mixed), mixed).await;
    assert_eq!(status, 200);
    assert_eq!(
        (answer["accepted"].as_u64(), answer["skipped"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        answer["skipped_reasons"][0],
        "event 1: label \"source\" is reserved for the source id"
    );
    server.running.stop().await;
}

#[tokio::test]
async fn unsigned_source_accepts_with_a_token_instead() {
    let fake = SlackFake::start().await;
    let text =
        config(&fake, "token = \"t0k\"", "").replace(&format!("secret = \"{SECRET}\"\n"), "");
    let server = start_server(&text, clock::system()).await;
    let url = format!("{}/ingest/upstream", server.base);
    let body = r#"{"kind":"acme.x"}"#;
    assert_eq!(server.client.post(&url, &[], body).await.status, 401);
    let reply = server
        .client
        .post(&url, &[("authorization", "Bearer t0k")], body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    server.running.stop().await;
}

#[test]
fn passthrough_and_measurements_reach_the_event() {
    let hook = Webhook {
        secret: None,
        tolerance_secs: 300,
        auth: None,
        format: Format::default(),
        max_body_bytes: 1 << 20,
    };
    let body = br#"{"kind":"acme.quota.used","value":9000,"limit":10000,
        "passthrough":{"order":"o-17","attempt":2},
        "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#;
    let batch = hook.parse(&Arc::from("upstream"), body, 0).unwrap();
    let event = &batch.events[0].event;
    assert_eq!((event.value, event.limit), (Some(9000.0), Some(10000.0)));
    let passthrough = hook.passthrough(event);
    assert_eq!(
        Value::Object(passthrough),
        json!({"order": "o-17", "attempt": 2})
    );
    assert_eq!(
        event.traceparent.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Format::default().parse(&Arc::from("up"), &body, 0);
    }

    /// Event-shaped input with arbitrary values is one event or one skip.
    #[test]
    fn arbitrary_events_are_events_or_skips(
        kind in ".{0,40}",
        time in ".{0,30}",
        label in ".{0,140}",
        weight in any::<f64>(),
    ) {
        let element = json!({"kind": kind, "time": time, "labels": {"l": label},
                             "weight": weight});
        let body = json!([element, {"kind": "ok.event"}]).to_string();
        let batch = Format::default().parse(&Arc::from("up"), body.as_bytes(), 0).unwrap();
        prop_assert_eq!(batch.events.len() + batch.skipped.len(), 2);
    }
}
