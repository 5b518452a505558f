//! `GET /api/v1/events`: what arrived is visible, newest first, filtered, and behind the
//! API token when one is set.

mod support;

use backchannel::clock;
use serde_json::Value;
use support::{sample, start_server};

const CONFIG: &str = r#"
[store]
path = "{db}"
[api]
token = "api-secret"
[sources.sg]
type = "sendgrid"
[sources.other]
type = "sendgrid"
[contacts.log]
type = "log"
"#;

const AUTH: (&str, &str) = ("authorization", "Bearer api-secret");

async fn events(server: &support::TestServer, query: &str) -> Vec<Value> {
    let reply = server
        .client
        .get_with(&format!("{}/api/v1/events?{query}", server.base), &[AUTH])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_are_listed_newest_first_with_filters() {
    let server = start_server(CONFIG, clock::system()).await;
    let url = |source: &str| format!("{}/ingest/{source}", server.base);
    let reply = server
        .client
        .post(
            &url("sg"),
            &[],
            sample("sendgrid/docs_all_event_types_batch.json"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = server
        .client
        .post(
            &url("other"),
            &[],
            sample("sendgrid/anymail_processed_custom_args_category_array.json"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // A redelivery is not listed twice.
    server
        .client
        .post(
            &url("sg"),
            &[],
            sample("sendgrid/docs_all_event_types_batch.json"),
        )
        .await;

    let all = events(&server, "").await;
    assert_eq!(all.len(), 12);
    assert_eq!(all[0]["source"], "other", "the later batch comes first");
    assert_eq!(all[0]["kind"], "sendgrid.processed");
    assert_eq!(all[0]["weight"], 1.0);
    assert_eq!(all[0]["labels"]["category"], "tag1,tag2");
    assert_eq!(all[0]["time"], "2016-04-19T19:47:26.000Z");
    // The sender's own fields, not SendGrid's.
    assert_eq!(
        all[0]["passthrough"],
        serde_json::json!({
            "anymail_id": "3c2f4df8-c6dd-4cd2-9b91-6582b81a0349",
            "custom1": "value1",
            "custom2": "value2"
        })
    );
    assert_eq!(all[0]["attributes"]["email"], "recipient@example.com");
    // Within the first batch, its last event is the newest.
    let batch: Vec<&str> = all[1..]
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(batch.first(), Some(&"sendgrid.group_resubscribe"));
    assert_eq!(batch.last(), Some(&"sendgrid.processed"));

    let bounces = events(&server, "kind=sendgrid.bounce").await;
    assert_eq!(bounces.len(), 1);
    assert_eq!(bounces[0]["labels"]["domain"], "test.com");
    assert_eq!(events(&server, "source=other").await.len(), 1);
    assert_eq!(events(&server, "source=sg&kind=sendgrid.*").await.len(), 11);
    let spam = events(&server, "label=domain:test.com").await;
    assert!(spam.iter().any(|e| e["kind"] == "sendgrid.spamreport"));
    assert!(spam.iter().all(|e| e["labels"]["domain"] == "test.com"));

    // Paging: `next` continues where the page ended.
    let reply = server
        .client
        .get_with(&format!("{}/api/v1/events?limit=1", server.base), &[AUTH])
        .await;
    let next = reply.json()["next"].as_i64().expect("a next cursor");
    let rest = events(&server, &format!("before={next}")).await;
    assert_eq!(rest.len(), 11);
    assert_eq!(rest[0]["source"], "sg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_without_the_token_and_explains_bad_queries() {
    let server = start_server(CONFIG, clock::system()).await;
    let url = format!("{}/api/v1/events", server.base);
    let reply = server.client.get(&url).await;
    assert_eq!(reply.status, 401);
    assert!(reply.text().contains("Authorization"), "{}", reply.text());
    let reply = server
        .client
        .get_with(&url, &[("authorization", "Bearer wrong")])
        .await;
    assert_eq!(reply.status, 401);
    let reply = server
        .client
        .get_with(&format!("{url}?limit=5000"), &[AUTH])
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().contains("limit: expected 1 to 1000"),
        "{}",
        reply.text()
    );
}
