//! The Alertmanager source through the real server: every sample payload, credentials
//! and bad input, the field cases B17 (long text), B28 (jump on a zero baseline) and
//! B29 (a flapping alert) fed as Alertmanager notifications, and Debian's
//! `prometheus-alertmanager` itself sending to backchannel.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use backchannel::clock;
use backchannel::sources::alertmanager::{DEFAULT_LABELS, FIRING, RESOLVED, parse_notification};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::{SlackFake, TestServer, sample, start_server};

const MINUTE: i64 = 60_000;
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A config with one Alertmanager source `am` (plus `source_extra`), the given rules,
/// and every alert routed to a Slack contact at the fake.
fn config(fake: &SlackFake, source_extra: &str, send_resolved: bool, rules: &str) -> String {
    format!(
        r##"
[server]
eval_interval = "20ms"
[store]
path = "{{db}}"
[sources.am]
type = "alertmanager"
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
send_resolved = {send_resolved}
{rules}
"##,
        api = fake.api_url()
    )
}

const EACH_FIRING: &str = r#"
[[rules]]
name = "am-firing"
kind = "each"
match = { kinds = ["alertmanager.firing"] }
group_by = ["alertname"]
window = "1h"
severity = "critical"
summary = "{{labels.alertname}}: {{event.annotations.summary}}"
"#;

fn url(server: &TestServer) -> String {
    format!("{}/ingest/am", server.base)
}

/// A clock the test moves by hand.
fn manual_clock(start_ms: i64) -> (Arc<AtomicI64>, clock::Clock) {
    let now = Arc::new(AtomicI64::new(start_ms));
    let read = now.clone();
    (now, Arc::new(move || read.load(Ordering::SeqCst)))
}

/// A notification of `alerts`, as Alertmanager sends it.
fn notification(status: &str, alerts: Vec<Value>) -> String {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"X\"}", "receiver": "backchannel",
        "status": status, "externalURL": "http://am.example:9093", "alerts": alerts,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
    })
    .to_string()
}

fn alert(name: &str, fingerprint: &str, status: &str, starts: &str, ends: &str) -> Value {
    json!({
        "status": status, "fingerprint": fingerprint, "startsAt": starts, "endsAt": ends,
        "labels": {"alertname": name, "severity": "critical", "instance": fingerprint},
        "annotations": {"summary": format!("{name} on {fingerprint}")},
    })
}

async fn post(server: &TestServer, body: impl Into<bytes::Bytes>) -> Value {
    let reply = server.client.post(&url(server), &[], body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Waits until the store holds an alert matching `want`.
async fn wait_alert(
    server: &TestServer,
    what: &str,
    want: impl Fn(&backchannel::store::AlertRow) -> bool,
) {
    let start = Instant::now();
    loop {
        let alerts = server.running.store.load_alerts().await.unwrap();
        if alerts.iter().any(&want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no alert {what}: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (file, accepted, duplicates, alert names) for every sample.
const SAMPLES: &[(&str, u64, u64, &[&str])] = &[
    (
        "alertmonitor_firing_compact_empty_external_host.json",
        3,
        0,
        &["ICMP ping failed"],
    ),
    (
        "calert_13_alerts_ist_offset.json",
        13,
        0,
        &["Instance Down"],
    ),
    // 30 copies of one alert (one fingerprint, start and state) and one other.
    (
        "calert_no_version_no_groupkey.json",
        2,
        29,
        &["DeadManAnotherSwitch", "DeadManSwitch"],
    ),
    (
        "msteams_grafana_inspired_payload.json",
        3,
        0,
        &["JustATestAlert_1"],
    ),
    (
        "msteams_prom_post_request_legacy.json",
        1,
        0,
        &["high_memory_load"],
    ),
];

#[tokio::test]
async fn every_sample_is_accepted_and_alerts() {
    let fake = SlackFake::start().await;
    let server = start_server(&config(&fake, "", true, EACH_FIRING), clock::system()).await;
    let mut names = Vec::new();
    for (file, accepted, duplicates, alert_names) in SAMPLES {
        let answer = post(&server, sample(&format!("alertmanager/{file}"))).await;
        assert_eq!(
            (
                answer["accepted"].as_u64(),
                answer["duplicates"].as_u64(),
                answer["skipped"].as_u64()
            ),
            (Some(*accepted), Some(*duplicates), Some(0)),
            "{file}: {answer}"
        );
        assert_eq!(answer["warnings"], json!([]), "{file}");
        names.extend(alert_names.iter().map(|n| n.to_string()));
    }

    // One alert per alert name, each with its annotation in the message.
    let sent = fake.wait_for_ok(names.len(), Duration::from_secs(10)).await;
    let mut texts: Vec<String> = sent
        .iter()
        .map(|r| r.body["text"].as_str().unwrap().to_string())
        .collect();
    texts.sort();
    let mut expected: Vec<String> = [
        "DeadManAnotherSwitch: Consider running `htop` and check the processes consuming max RAM.",
        "DeadManSwitch: Consider running `htop` and check the processes consuming max RAM.",
        "ICMP ping failed: ",
        "Instance Down: Server is down",
        "JustATestAlert_1: Ratio(Max(Working Set, RSS) / Reservation) [5m Avg] &lt; 40 %",
        "high_memory_load: Server High Memory usage",
    ]
    .iter()
    .map(|t| format!("Firing [critical]: {t}"))
    .collect();
    expected.sort();
    assert_eq!(texts, expected);

    // The same notifications again are all duplicates.
    for (file, accepted, duplicates, _) in SAMPLES {
        let answer = post(&server, sample(&format!("alertmanager/{file}"))).await;
        assert_eq!(answer["accepted"], 0, "{file}");
        assert_eq!(
            answer["duplicates"].as_u64(),
            Some(accepted + duplicates),
            "{file}"
        );
    }
    server.running.stop().await;
}

#[test]
fn sample_events_have_the_documented_shape() {
    let labels: Vec<String> = DEFAULT_LABELS.iter().map(|s| s.to_string()).collect();
    let parse = |file: &str| {
        parse_notification(
            &Arc::from("am"),
            &labels,
            &sample(&format!("alertmanager/{file}")),
            7,
        )
        .unwrap()
    };

    let ist = parse("calert_13_alerts_ist_offset.json");
    let first = &ist.events[0].event;
    assert_eq!(first.kind, FIRING);
    // 15:16:59.2253602 at +05:30 is 09:46:59.225 UTC.
    assert_eq!(first.time_ms, 1_545_817_619_225);
    let labels_of = |e: &backchannel::event::Event| -> Vec<(String, String)> {
        e.labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        labels_of(first),
        [
            ("alertname".into(), "Instance Down".into()),
            ("job".into(), "node".into()),
            ("severity".into(), "critical".into())
        ]
    );
    let raw: Value = serde_json::from_str(&first.raw).unwrap();
    assert_eq!(
        raw["labels"]["instance"], "10.1.2.3:9100",
        "all labels stay in the raw event"
    );
    assert_eq!(raw["receiver"], "team-awesome-mails");
    let mut keys: Vec<i64> = ist.events.iter().map(|e| e.keys.unwrap()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 13, "no fingerprints, but 13 label sets");

    let legacy = parse("msteams_prom_post_request_legacy.json");
    let event = &legacy.events[0].event;
    assert_eq!(
        event.kind, FIRING,
        "no per-alert status and a zero endsAt: firing"
    );
    assert_eq!(event.time_ms, 1_520_422_401_873);
    assert_eq!(event.provider_id, None);

    let grafana = parse("msteams_grafana_inspired_payload.json");
    let event = &grafana.events[0].event;
    assert_eq!(event.provider_id.as_deref(), Some("ff6a7a0f5f1c1309"));
    assert_eq!(event.label("namespace"), Some("whatever/promstack"));
    assert_eq!(event.label("name"), None, "not on the default allow-list");
    let raw: Value = serde_json::from_str(&event.raw).unwrap();
    assert_eq!(raw["annotations"]["value"], "30.10 %");
    assert!(
        raw["annotations"]["description"]
            .as_str()
            .unwrap()
            .ends_with("ea.\\n")
    );

    let compact = parse("alertmonitor_firing_compact_empty_external_host.json");
    assert_eq!(compact.events.len(), 3);
    assert_eq!(compact.events[0].event.label("severity"), Some("major"));
    let unversioned = parse("calert_no_version_no_groupkey.json");
    assert!(
        unversioned.warnings.is_empty(),
        "a missing version is tolerated"
    );
    assert_eq!(
        unversioned.events[0].event.label("severity"),
        Some("deadman")
    );
}

#[tokio::test]
async fn credentials_are_checked_before_anything_else() {
    let fake = SlackFake::start().await;
    let text = config(
        &fake,
        "token = \"am-secret\"\nmax_body_bytes = 4096",
        true,
        "",
    );
    let server = start_server(&text, clock::system()).await;
    let body = notification(
        "firing",
        vec![alert(
            "A",
            "f1",
            "firing",
            "2024-01-01T00:00:00Z",
            ZERO_TIME,
        )],
    );
    for (headers, status) in [
        (vec![], 401),
        (vec![("authorization", "Bearer wrong")], 401),
        (vec![("authorization", "Basic YW06YW0tc2VjcmV0")], 401),
        (vec![("authorization", "Bearer am-secret")], 200),
    ] {
        let reply = server
            .client
            .post(&url(&server), &headers, body.clone())
            .await;
        assert_eq!(reply.status, status, "{headers:?}: {}", reply.text());
        if status == 401 {
            assert!(
                !reply.text().contains("am-secret"),
                "the secret is never echoed"
            );
        }
    }

    let basic = config(
        &fake,
        "username = \"am\"\npassword = \"am-secret\"",
        true,
        "",
    );
    let server_basic = start_server(&basic, clock::system()).await;
    let reply = server_basic
        .client
        .post(
            &url(&server_basic),
            &[("authorization", "Basic YW06YW0tc2VjcmV0")],
            body.clone(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    server_basic.running.stop().await;

    let auth = [("authorization", "Bearer am-secret")];
    let mut invalid_utf8 = body.clone().into_bytes();
    invalid_utf8[40] = 0xff;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            body.as_bytes()[..body.len() / 2].to_vec(),
            400,
            "expected an Alertmanager notification",
        ),
        (invalid_utf8, 400, "not UTF-8"),
        (b"[]".to_vec(), 400, "expected an Alertmanager notification"),
        (
            b"{\"alerts\":[{\"no\":\"labels\"}]}".to_vec(),
            400,
            "no event in the batch is valid; first problem: alert 0: no \"labels\" object",
        ),
        (vec![b' '; 5000], 413, "4096 bytes"),
    ];
    for (bad, status, reason) in cases {
        let reply = server.client.post(&url(&server), &auth, bad).await;
        assert_eq!(reply.status, status, "{}", reply.text());
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains(reason) || error.contains("no event in the batch"),
            "{error}"
        );
    }
    let reply = raw_post(&server, "text/plain", "Bearer am-secret", body.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 415"), "{reply}");
    assert!(
        reply.contains("content-type \\\"text/plain\\\" is not supported"),
        "{reply}"
    );
    server.running.stop().await;
}

/// A POST with exactly one content type, which the shared client cannot send.
async fn raw_post(
    server: &TestServer,
    content_type: &str,
    authorization: &str,
    body: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /ingest/am HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\n\
         authorization: {authorization}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    reply
}

/// Field case B17 as an Alertmanager notification: a 3500-character description and
/// a 200-character summary still reach Slack, within its limits.
#[tokio::test]
async fn b17_long_annotations_fit_slack_limits() {
    let fake = SlackFake::start().await;
    let rules = r#"
[[rules]]
name = "JobFailed"
kind = "each"
match = { kinds = ["alertmanager.firing"] }
severity = "critical"
summary = "{{event.annotations.summary}}"
description = "{{event.annotations.description}}"
"#;
    let server = start_server(&config(&fake, "", true, rules), clock::system()).await;
    let body = json!({"receiver":"slack-ops","status":"firing",
        "groupLabels":{"alertname":"JobFailed"},
        "commonLabels":{"alertname":"JobFailed","severity":"critical"},
        "alerts":[{"status":"firing","labels":{"alertname":"JobFailed","job":"nightly-build"},
          "annotations":{"summary":"S".repeat(200),"description":"x".repeat(3500)},
          "startsAt":"2023-11-14T22:13:20Z","endsAt":ZERO_TIME,"fingerprint":"f00dbabe00000001"}]});
    assert_eq!(post(&server, body.to_string()).await["accepted"], 1);

    let sent = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    let message = &sent[0].body;
    let header = message["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        header.chars().count() <= 150 && header.ends_with('…'),
        "{header}"
    );
    let sections: Vec<&str> = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "section")
        .filter_map(|b| b["text"]["text"].as_str())
        .collect();
    assert!(sections.iter().all(|t| t.chars().count() <= 3000));
    let description = sections
        .iter()
        .find(|t| t.starts_with("xxx"))
        .expect("description");
    assert!(description.ends_with('…'));
    assert!(message["text"].as_str().unwrap().chars().count() <= 40_000);
    server.running.stop().await;
}

/// Field case B28 with Alertmanager alerts as the events: a jump rule with a zero
/// baseline fires only at `min_count`, says "new activity", and 2× is inclusive.
/// (ref=0 cur=0 sends nothing at all, so there is nothing to post for it.)
#[tokio::test]
async fn b28_jump_on_a_zero_baseline() {
    let fake = SlackFake::start().await;
    let rules = r#"
[[rules]]
name = "am-jump"
kind = "jump"
match = { kinds = ["alertmanager.firing"] }
group_by = ["alertname"]
window = "5m"
baseline = "5m"
factor = 2
min_count = 5
severity = "warning"
summary = "{{labels.alertname}}: {{facts.measure}}"
"#;
    let start = 1_700_000_000_000;
    let (now, clock) = manual_clock(start);
    let server = start_server(&config(&fake, "", false, rules), clock).await;
    let batch = |name: &str, count: usize, minute: i64| {
        let alerts = (0..count)
            .map(|i| {
                let starts = format!("2023-11-14T22:{minute:02}:00Z");
                alert(
                    name,
                    &format!("{name}-{minute}-{i}"),
                    "firing",
                    &starts,
                    ZERO_TIME,
                )
            })
            .collect();
        notification("firing", alerts)
    };
    // The references are new activity themselves: they fire, then resolve once their
    // window has passed (resolutions are not sent in this config).
    post(&server, batch("Ref10Cur20", 10, 0)).await;
    post(&server, batch("Ref10Cur19", 10, 0)).await;
    let first = fake.wait_for_ok(2, Duration::from_secs(10)).await;
    for request in &first {
        let text = request.body["text"].as_str().unwrap();
        assert!(text.ends_with(": new activity: 10 vs 0"), "{text}");
    }
    now.store(start + 5 * MINUTE + 30_000, Ordering::SeqCst);
    let start_wait = Instant::now();
    while server
        .running
        .store
        .load_alerts()
        .await
        .unwrap()
        .iter()
        .any(|a| a.status != "resolved")
    {
        assert!(
            start_wait.elapsed() < Duration::from_secs(10),
            "references never resolved"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    post(&server, batch("Ref0Cur1", 1, 6)).await;
    post(&server, batch("Ref10Cur20", 20, 6)).await;
    post(&server, batch("Ref10Cur19", 19, 6)).await;
    // The runner takes events in order: once this one's alert exists, the others
    // have been evaluated.
    post(&server, batch("Ref0Cur7", 7, 6)).await;
    wait_alert(&server, "for Ref0Cur7", |a| a.labels.contains("Ref0Cur7")).await;

    let sent = fake.wait_for_ok(4, Duration::from_secs(10)).await;
    let mut texts: Vec<&str> = sent[2..]
        .iter()
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            "Firing [warning]: Ref0Cur7: new activity: 7 vs 0",
            "Firing [warning]: Ref10Cur20: 20 vs 10 expected (2x)",
        ]
    );
    for text in &texts {
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }
    let alerts = server.running.store.load_alerts().await.unwrap();
    let mut states: Vec<(bool, bool)> = alerts
        .iter()
        .map(|a| (a.labels.contains("Ref10Cur19"), a.status == "firing"))
        .collect();
    states.sort();
    assert_eq!(
        states,
        [(false, true), (false, true), (true, false)],
        "{alerts:?}"
    );
    server.running.stop().await;
}

/// Field case B29: Alertmanager flaps an alert (firing, resolved, firing, ...) and
/// resolutions are not sent. Every re-fire after a resolution is told; a repeat of the
/// same firing notification, and another alert of the same name while it fires, are
/// not.
#[tokio::test]
async fn b29_flapping_alert_without_sent_resolutions() {
    let fake = SlackFake::start().await;
    let rules = EACH_FIRING.replace("window = \"1h\"", "window = \"2m\"");
    let start = 1_700_000_000_000;
    let (now, clock) = manual_clock(start);
    let server = start_server(&config(&fake, "", false, &rules), clock).await;
    let at = |minute: i64| {
        now.store(start + minute * MINUTE, Ordering::SeqCst);
    };
    let starts = |minute: i64| format!("2023-11-14T22:{:02}:20Z", 13 + minute);
    let fp = "aa11bb22cc33dd44";
    let firing = |minute: i64| {
        notification(
            "firing",
            vec![alert(
                "TimeBasedTest",
                fp,
                "firing",
                &starts(minute),
                ZERO_TIME,
            )],
        )
    };
    let resolved = |minute: i64, fired: i64| {
        let alert = alert(
            "TimeBasedTest",
            fp,
            "resolved",
            &starts(fired),
            &starts(minute),
        );
        notification("resolved", vec![alert])
    };

    let mut told = 0;
    for (minute, fired) in [(0, 0), (5, 0), (10, 10), (15, 10), (20, 20)] {
        at(minute);
        if minute == fired {
            assert_eq!(post(&server, firing(minute)).await["accepted"], 1);
            told += 1;
            fake.wait_for_ok(told, Duration::from_secs(10)).await;
            // A minute later: the same notification again, and a second instance.
            at(minute + 1);
            assert_eq!(post(&server, firing(minute)).await["duplicates"], 1);
            let other = alert(
                "TimeBasedTest",
                "ee55ff66",
                "firing",
                &starts(minute),
                ZERO_TIME,
            );
            assert_eq!(
                post(&server, notification("firing", vec![other])).await["accepted"],
                1
            );
        } else {
            let answer = post(&server, resolved(minute, fired)).await;
            assert_eq!(answer["accepted"], 1);
            // The rule's window has emptied by now: the alert resolves, untold.
            wait_alert(&server, "resolved", |a| a.status == "resolved").await;
        }
    }
    // Let a few evaluations pass, then count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let requests = fake.requests();
    let texts: Vec<&str> = requests
        .iter()
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts, ["Firing [critical]: TimeBasedTest: TimeBasedTest on aa11bb22cc33dd44"; 3],
        "three firings, no resolution, no repeat"
    );
    server.running.stop().await;
}

// ---------------------------------------------------------------------------------
// The real Alertmanager
// ---------------------------------------------------------------------------------

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap()
}

/// Debian's Alertmanager routes alerts posted to its API to backchannel's webhook, with
/// a bearer token; both the firing and the resolved notification arrive and alert.
#[tokio::test]
async fn real_alertmanager_fires_and_resolves_through_backchannel() {
    assert!(
        Path::new(ALERTMANAGER).exists(),
        "{ALERTMANAGER} is missing: install Debian's prometheus-alertmanager \
         (apt-get install prometheus-alertmanager), as .ci/run does"
    );
    let fake = SlackFake::start().await;
    let rules = format!(
        "{EACH_FIRING}{}",
        r#"
[[rules]]
name = "am-resolved"
kind = "each"
match = { kinds = ["alertmanager.resolved"] }
group_by = ["alertname"]
window = "1h"
severity = "info"
summary = "{{labels.alertname}} resolved in Alertmanager"
"#
    );
    // Metrics are process-wide, so this test's source has an id of its own.
    let text = config(&fake, "token = \"am-token\"", true, &rules)
        .replace("[sources.am]", "[sources.am-real]");
    let server = start_server(&text, clock::system()).await;
    let webhook_url = format!("{}/ingest/am-real", server.base);

    let dir = tempfile::tempdir().unwrap();
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "global:\n  resolve_timeout: 1m\n\
             route:\n  receiver: backchannel\n  group_by: ['alertname']\n  group_wait: 1s\n\
             \x20 group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: backchannel\n    webhook_configs:\n\
             \x20     - url: '{}'\n        send_resolved: true\n        http_config:\n\
             \x20         authorization:\n            type: Bearer\n\
             \x20           credentials: am-token\n",
            webhook_url
        ),
    )
    .unwrap();
    let addr = free_port();
    let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
    let child = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", am_config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {ALERTMANAGER}: {e}"));
    let mut alertmanager = Running(child);
    let am_log =
        || std::fs::read_to_string(dir.path().join("alertmanager.log")).unwrap_or_default();
    let start = Instant::now();
    while server
        .client
        .try_get(&format!("http://{addr}/-/ready"))
        .await
        != Some(200)
    {
        if let Ok(Some(status)) = alertmanager.0.try_wait() {
            panic!("alertmanager exited with {status}: {}", am_log());
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "alertmanager not ready: {}",
            am_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let now = chrono::Utc::now();
    let starts = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let alert = |ends: Option<String>| {
        let mut alert = json!({
            "labels": {"alertname": "BackchannelProbe", "severity": "critical",
                       "instance": "db1.example:9100", "team": "storage"},
            "annotations": {"summary": "disk almost full"},
            "startsAt": starts,
            "generatorURL": "http://prometheus.example/graph?g0.expr=up",
        });
        if let Some(ends) = ends {
            alert["endsAt"] = json!(ends);
        }
        json!([alert]).to_string()
    };
    let api = format!("http://{addr}/api/v2/alerts");
    let reply = server.client.post(&api, &[], alert(None)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let sent = fake.wait_for_ok(1, Duration::from_secs(20)).await;
    assert_eq!(
        sent[0].body["text"],
        "Firing [critical]: BackchannelProbe: disk almost full"
    );
    wait_alert(&server, "am-firing", |a| {
        a.rule == "am-firing" && a.labels.contains("BackchannelProbe")
    })
    .await;

    let ends = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let reply = server.client.post(&api, &[], alert(Some(ends))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = fake.wait_for_ok(2, Duration::from_secs(20)).await;
    assert_eq!(
        sent[1].body["text"],
        "Firing [info]: BackchannelProbe resolved in Alertmanager"
    );
    wait_alert(&server, "am-resolved", |a| a.rule == "am-resolved").await;

    assert!(alertmanager.0.try_wait().unwrap().is_none(), "{}", am_log());
    let metrics = server
        .client
        .get(&format!("{}/metrics", server.base))
        .await
        .text();
    assert!(
        !metrics.contains("backchannel_requests_rejected_total{source=\"am-real\""),
        "every notification was accepted: {metrics}"
    );
    assert!(
        metrics.contains("backchannel_events_accepted_total{source=\"am-real\"} 2"),
        "one firing and one resolved event: {metrics}"
    );
    drop(alertmanager);
    server.running.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes are parsed or refused with a reason, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let labels = vec!["alertname".to_string(), "severity".to_string()];
        let _ = parse_notification(&Arc::from("am"), &labels, &body, 0);
    }

    /// Alert-shaped input with arbitrary field values yields one event or one skip.
    #[test]
    fn arbitrary_alerts_are_events_or_skips(
        status in ".{0,10}",
        starts in ".{0,30}",
        ends in ".{0,30}",
        name in ".{0,200}",
    ) {
        let body = json!({"alerts": [{"status": status, "startsAt": starts, "endsAt": ends,
                                      "labels": {"alertname": name}}]}).to_string();
        let labels = vec!["alertname".to_string()];
        let batch = parse_notification(&Arc::from("am"), &labels, body.as_bytes(), 0).unwrap();
        prop_assert_eq!(batch.events.len() + batch.skipped.len(), 1);
        for parsed in &batch.events {
            prop_assert!(parsed.event.kind == FIRING || parsed.event.kind == RESOLVED);
        }
    }
}
