//! The real binary, killed with SIGKILL and started again: no accepted event is lost,
//! no notification already sent is sent again, and redeliveries stay duplicates.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::SlackFake;
use support::reqwest_lite::Client;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_child(config: &std::path::Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_backchannel"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Server { child }
}

/// Waits until `path` answers `status`, or panics after `limit`.
async fn wait_for(client: &Client, port: u16, path: &str, status: u16, limit: Duration) {
    let start = Instant::now();
    loop {
        let url = format!("http://127.0.0.1:{port}{path}");
        if let Ok(Some(reply)) =
            tokio::time::timeout(Duration::from_millis(500), client.try_get(&url)).await
            && reply == status
        {
            return;
        }
        assert!(start.elapsed() < limit, "{path} never answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn spawn(config: &std::path::Path, port: u16, client: &Client) -> Server {
    let server = start_child(config, port);
    wait_for(client, port, "/readyz", 200, Duration::from_secs(20)).await;
    server
}

/// Three bounces within an hour at one domain fire.
const BOUNCE_RULE: &str = r#"
[[rules]]
name = "bounces"
kind = "threshold"
match = { kinds = ["sendgrid.bounce"] }
group_by = ["domain"]
window = "1h"
threshold = 3
summary = "{{facts.count}} bounces at {{labels.domain}}"
"#;

/// Writes a config in `dir` with one SendGrid source, every alert routed to a Slack
/// contact on `fake`, and `rules`; returns its path.
fn write_config(dir: &std::path::Path, fake: &SlackFake, rules: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r##"
[server]
eval_interval = "100ms"
[store]
path = "state.db"
[sources.sendgrid]
type = "sendgrid"
[contacts.slack]
type = "slack"
token = "xoxb-restart"
channel = "#alerts"
api_url = "{}"
[[routes]]
contacts = ["slack"]
{rules}"##,
        fake.api_url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// One SendGrid event of type `event` to `email` with id `id`, as a batch.
fn one_event(event: &str, email: &str, id: &str) -> String {
    format!(
        r#"[{{"event":"{event}","email":"{email}","timestamp":1700000000,"sg_event_id":"{id}"}}]"#
    )
}

#[tokio::test]
async fn kill_9_loses_nothing_and_resends_nothing() {
    let fake = SlackFake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &fake,
        &format!(
            r#"
[[rules]]
name = "spam"
kind = "each"
match = {{ kinds = ["sendgrid.spamreport"] }}
window = "1h"
summary = "spam complaint"
{BOUNCE_RULE}"#
        ),
    );
    let port = free_port();
    let client = Client::new();
    let url = format!("http://127.0.0.1:{port}/ingest/sendgrid");
    let spam = one_event("spamreport", "a@x.example", "s1");
    let two_bounces = format!(
        "[{},{}]",
        one_event("bounce", "a@b.example", "b1").trim_matches(['[', ']']),
        one_event("bounce", "c@b.example", "b2").trim_matches(['[', ']'])
    );

    let mut server = spawn(&config, port, &client).await;
    assert_eq!(client.post(&url, &[], spam).await.status, 200);
    fake.wait_for_ok(1, Duration::from_secs(10)).await;
    assert_eq!(
        client.post(&url, &[], two_bounces.clone()).await.json()["accepted"],
        2
    );
    server.child.kill().unwrap(); // SIGKILL: no shutdown code runs
    server.child.wait().unwrap();

    let _server = spawn(&config, port, &client).await;
    // Redeliveries after the restart are still duplicates.
    let again = client.post(&url, &[], two_bounces).await.json();
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    // The two bounces before the crash count: a third reaches the threshold.
    let third =
        r#"[{"event":"bounce","email":"d@b.example","timestamp":1700000002,"sg_event_id":"b3"}]"#;
    assert_eq!(client.post(&url, &[], third).await.json()["accepted"], 1);

    let sent = fake.wait_for_ok(2, Duration::from_secs(10)).await;
    assert_eq!(
        sent[1].body["text"],
        "Firing [warning]: 3 bounces at b.example"
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // several evaluation ticks
    let texts: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.body["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        texts,
        [
            "Firing [warning]: spam complaint",
            "Firing [warning]: 3 bounces at b.example"
        ],
        "the spam alert is not sent again"
    );
}

/// A restart with a long journal to read back answers at once: `/healthz` is up and
/// `/readyz` says it is starting while the dedup index loads and the windows are
/// rebuilt, ingest asks to retry until the index is loaded, and a batch posted then is
/// accepted and counted exactly once, after the events from before the restart.
#[tokio::test]
async fn ingest_is_answered_while_windows_are_rebuilt() {
    let fake = SlackFake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake, BOUNCE_RULE);
    let port = free_port();
    let client = Client::new();
    let url = format!("http://127.0.0.1:{port}/ingest/sendgrid");
    let bounce = |id: &str| one_event("bounce", "a@b.example", id);

    // Enough journal that reading it back takes a while, and two bounces in it.
    let mut server = spawn(&config, port, &client).await;
    for n in 0..60 {
        let events: Vec<String> = (0..2000)
            .map(|i| {
                let email = format!("u{i}@d{n}.example");
                let one = one_event("delivered", &email, &format!("d{n}-{i}"));
                one.trim_matches(['[', ']']).to_string()
            })
            .collect();
        let reply = client
            .post(&url, &[], format!("[{}]", events.join(",")))
            .await;
        assert_eq!(reply.json()["accepted"], 2000);
    }
    for id in ["b1", "b2"] {
        assert_eq!(
            client.post(&url, &[], bounce(id)).await.json()["accepted"],
            1
        );
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let _server = start_child(&config, port);
    wait_for(&client, port, "/healthz", 200, Duration::from_secs(20)).await;
    let ready = client.get(&format!("http://127.0.0.1:{port}/readyz")).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().starts_with("starting"), "{}", ready.text());
    // While the dedup index loads, ingest asks to retry; then it accepts, while the
    // windows are still being rebuilt.
    let during = loop {
        let reply = client.post(&url, &[], bounce("b3")).await;
        if reply.status != 503 {
            break reply;
        }
        assert_eq!(reply.headers["retry-after"], "1");
        assert!(reply.text().contains("starting"), "{}", reply.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(during.status, 200, "{}", during.text());
    assert_eq!(during.json()["accepted"], 1);
    wait_for(&client, port, "/readyz", 200, Duration::from_secs(60)).await;

    let sent = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    assert_eq!(
        sent[0].body["text"],
        "Firing [warning]: 3 bounces at b.example"
    );
}

/// `replay --json` of `payloads` on the example config, without Slack: one value a line.
fn replay_example(payloads: &[std::path::PathBuf]) -> Vec<serde_json::Value> {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_backchannel"))
        .args(["replay", "--config", example, "--json"])
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
fn replay_prints_the_notifications_as_json() {
    let lines = replay_example(&[
        support::samples().join("sendgrid/docs_all_event_types_batch.json"),
        support::samples().join("sendgrid/anymail_dropped_invalid.json"),
    ]);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["rule"], "sendgrid-spam-report");
    assert_eq!(lines[0]["status"], "firing");
    assert_eq!(lines[0]["severity"], "warning");
    assert_eq!(lines[0]["labels"]["domain"], "test.com");
    assert_eq!(
        lines[0]["summary"],
        "Spam complaint from a recipient at test.com (1 in the last hour)"
    );
    assert_eq!(lines[0]["at"], "2017-12-15T00:59:29Z");
    // Without SLACK_BOT_TOKEN the example's Slack contact is disabled.
    assert_eq!(lines[0]["contacts"], serde_json::json!(["log"]));
}

/// Between events, replay checks firing alerts as often as the server would, so a
/// resolution is dated when its window emptied, not when the next event came.
#[test]
fn replay_dates_a_resolution_when_its_window_empties() {
    let dir = tempfile::tempdir().unwrap();
    let spam = dir.path().join("spam.json");
    std::fs::write(&spam, one_event("spamreport", "a@x.example", "s")).unwrap();
    let later = dir.path().join("later.json");
    let ten_hours_later =
        one_event("delivered", "a@x.example", "d").replace("1700000000", "1700036000");
    std::fs::write(&later, ten_hours_later).unwrap();
    let lines = replay_example(&[spam, later]);
    let seen: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["status"].as_str().unwrap(), l["at"].as_str().unwrap()))
        .collect();
    // The example's spam rule has a one-hour window of 30 two-minute buckets: the
    // report's bucket, 22:12 to 22:14, leaves the window at 23:12, ten hours before the
    // next event.
    assert_eq!(
        seen,
        [
            ("firing", "2023-11-14T22:13:20Z"),
            ("resolved", "2023-11-14T23:12:00Z")
        ]
    );
}

#[test]
fn check_names_file_key_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "[[rules]]\nname = \"x\"\nkind = \"threshold\"\nwindow = \"ten minutes\"\nthreshold = 5\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_backchannel"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = "broken.toml: rules[0].window: expected a duration above zero such as \
                    \"10m\" or \"24h\", found \"ten minutes\"";
    assert!(stderr.contains(expected), "{stderr}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_backchannel"))
        .args(["check", "--config", example])
        .env_remove("SLACK_BOT_TOKEN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ok (3 sources, 10 rules, 2 routes, 1 contact enabled)"),
        "{stdout}"
    );
}
