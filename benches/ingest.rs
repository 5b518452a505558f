//! Ingest throughput of the real `backchannel serve`, and the same load on Prometheus
//! Alertmanager for comparison.
//!
//! Run it with `cargo bench --bench ingest` (it builds in release). For each group count
//! (1,000 and 200,000 by default) it:
//!
//! 1. writes a config into a temporary directory: the rules, routes and `sendgrid` source
//!    of `config/example.toml`, the SQLite store in the temporary directory, and only the
//!    `log` contact (no Slack); the source is left unsigned;
//! 2. starts the `backchannel` binary of this package as a child process on a free
//!    loopback port and waits for `GET /healthz`;
//! 3. posts SendGrid Event Webhook batches of 1,000 events (about 370 bytes each, mostly
//!    `processed`/`delivered`, some `bounce`/`dropped`/`deferred`, every `sg_event_id`
//!    unique) to `POST /ingest/sendgrid` over several keep-alive connections; a 503 is
//!    retried after its `Retry-After`, and only 2xx answers count;
//! 4. reports events/s over the whole run (first request to last answer), p50/p99
//!    request latency, the child's peak RSS (`VmHWM`), CPU time and bytes written, and
//!    checks that `/metrics` counts every event sent as accepted (each 2xx means
//!    "durable").
//!
//! The group count is the number of distinct recipient domains, the label the
//! domain-grouped rules (`sendgrid-bounce-spike`, `sendgrid-deferred-growth`, ...) group
//! by. The server's own `backchannel_rule_groups` gauge is printed too: only events those
//! rules match open groups, so with 200,000 events it stays below 200,000.
//!
//! If `/usr/bin/prometheus-alertmanager` exists (Debian's package), the same number of
//! alerts is posted to its `POST /api/v2/alerts` in batches of 1,000, with as many
//! distinct label sets as groups and the same concurrency, and the two are compared.
//! Without it the comparison is skipped with a message. Nothing is installed.
//!
//! Request bodies are built before the clock starts, and the load generator runs on one
//! thread, so the servers get the rest of the machine. The CPU time other processes used
//! during each run is printed, since a busy machine skews the figures.
//!
//! All traffic goes to 127.0.0.1; every loop is bounded in count and time; the child
//! processes are killed when the run ends, also on error. Environment knobs:
//! `BENCH_EVENTS` (default 200000, at most 5000000), `BENCH_CONCURRENCY` (16),
//! `BENCH_GROUPS` (`1000,200000`), `BENCH_TIMEOUT_SECS` (per run, 600),
//! `BENCH_ALERTMANAGER` (path of the binary, or `skip`).

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const BATCH_EVENTS: usize = 1_000;
const DEFAULT_EVENTS: usize = 200_000;
/// Bodies are built up front (about 380 bytes per event), so this bounds the memory.
const MAX_EVENTS: usize = 5_000_000;
const DEFAULT_CONCURRENCY: usize = 16;
const DEFAULT_GROUPS: &[usize] = &[1_000, 200_000];
const DEFAULT_TIMEOUT_SECS: u64 = 600;
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// Longest wait for one HTTP answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Most 503 retries of one batch before it counts as failed.
const MAX_RETRIES_PER_BATCH: u32 = 60;
/// Longest `Retry-After` honoured; larger values are capped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Longest wait for a child to answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Linux reports process CPU times in USER_HZ ticks, 100 per second on every
/// mainstream architecture.
const TICKS_PER_SEC: f64 = 100.0;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn main() -> ExitCode {
    // `cargo test --all-targets` runs benches without `--bench`: only say how to run it.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("ingest benchmark: skipped (run it with `cargo bench --bench ingest`)");
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(error) => {
            eprintln!("ingest benchmark: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(&settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("ingest benchmark: FAILED (see the checks above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("ingest benchmark failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

struct Settings {
    events: usize,
    concurrency: usize,
    groups: Vec<usize>,
    timeout: Duration,
    alertmanager: Option<PathBuf>,
    alertmanager_note: String,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let number = |name: &str, default: usize| -> anyhow::Result<usize> {
            match std::env::var(name) {
                Ok(text) => match text.trim().replace('_', "").parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => bail!("{name}: expected a positive integer, found {text:?}"),
                },
                Err(_) => Ok(default),
            }
        };
        let events = number("BENCH_EVENTS", DEFAULT_EVENTS)?;
        if events > MAX_EVENTS {
            bail!("BENCH_EVENTS: at most {MAX_EVENTS}, found {events}");
        }
        let concurrency = number("BENCH_CONCURRENCY", DEFAULT_CONCURRENCY)?.min(256);
        let timeout = Duration::from_secs(number(
            "BENCH_TIMEOUT_SECS",
            DEFAULT_TIMEOUT_SECS as usize,
        )? as u64);
        let groups = match std::env::var("BENCH_GROUPS") {
            Ok(text) => text
                .split(',')
                .map(|g| match g.trim().replace('_', "").parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(anyhow!(
                        "BENCH_GROUPS: expected positive integers separated by commas, \
                         found {text:?}"
                    )),
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            Err(_) => DEFAULT_GROUPS.to_vec(),
        };
        let (alertmanager, alertmanager_note) = match std::env::var("BENCH_ALERTMANAGER") {
            Ok(value) if value == "skip" => (None, "skipped: BENCH_ALERTMANAGER=skip".to_string()),
            Ok(path) => (Some(PathBuf::from(path)), String::new()),
            Err(_) if Path::new(ALERTMANAGER).exists() => {
                (Some(PathBuf::from(ALERTMANAGER)), String::new())
            }
            Err(_) => (
                None,
                format!(
                    "skipped: {ALERTMANAGER} not found (Debian: \
                     `apt-get install prometheus-alertmanager`; \
                     or set BENCH_ALERTMANAGER to the binary)"
                ),
            ),
        };
        Ok(Self {
            events,
            concurrency,
            groups,
            timeout,
            alertmanager,
            alertmanager_note,
        })
    }
}

/// The figures of one run against one server.
struct Report {
    system: &'static str,
    groups: usize,
    sent: usize,
    ok: usize,
    requests: usize,
    retries: u64,
    failures: Vec<String>,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    body_bytes: usize,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
    cpu_secs: f64,
    client_cpu_secs: f64,
    /// Bytes the server passed to write calls during the run (`wchar` of
    /// `/proc/<pid>/io`): WAL frames, checkpoints, logs.
    written_bytes: u64,
    /// CPU time every other process on the machine used during the run.
    others_cpu_secs: f64,
    /// `/proc/loadavg` when the run started.
    loadavg: String,
    /// backchannel only: `backchannel_events_accepted_total` after the run.
    accepted_metric: Option<f64>,
    /// backchannel only: `backchannel_rule_groups` after the run.
    rule_groups: Option<f64>,
}

impl Report {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn run(settings: &Settings) -> anyhow::Result<bool> {
    print_machine(settings);
    let client = http_client(settings.concurrency);
    let mut reports = Vec::new();
    for &groups in &settings.groups {
        reports.push(bench_backchannel(settings, &client, groups).await?);
    }
    match &settings.alertmanager {
        Some(binary) => {
            for &groups in &settings.groups {
                reports.push(bench_alertmanager(settings, &client, binary, groups).await?);
            }
        }
        None => println!("\nAlertmanager comparison {}", settings.alertmanager_note),
    }
    Ok(print_summary(settings, &reports))
}

fn print_machine(settings: &Settings) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("ingest benchmark");
    println!("  machine:     {cpus} CPUs ({model}), client and servers share them");
    println!("  backchannel: {}", env!("CARGO_BIN_EXE_backchannel"));
    println!("  source:      {}", source_state());
    println!(
        "  load:        {} events per run in batches of {BATCH_EVENTS}, \
         {} concurrent keep-alive connections, groups {:?}",
        settings.events, settings.concurrency, settings.groups
    );
}

/// The git commit of the source tree and whether the server's sources differ from it,
/// so a pasted result says what it measured.
fn source_state() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown (no git checkout)".into();
    };
    let paths = ["src", "migrations", "config", "Cargo.toml", "Cargo.lock"];
    let status =
        git(&[&["status", "--porcelain", "--"][..], &paths[..]].concat()).unwrap_or_default();
    let changed: Vec<&str> = status.lines().filter_map(|l| l.get(3..)).collect();
    if changed.is_empty() {
        format!("commit {head}")
    } else {
        format!(
            "commit {head} with uncommitted changes in {}",
            changed.join(", ")
        )
    }
}

fn http_client(concurrency: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

// ---------------------------------------------------------------------------------
// backchannel
// ---------------------------------------------------------------------------------

async fn bench_backchannel(
    settings: &Settings,
    client: &HttpClient,
    groups: usize,
) -> anyhow::Result<Report> {
    println!("\n== backchannel, {groups} groups ==");
    let dir = tempfile::Builder::new()
        .prefix("backchannel-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let config_path = dir.path().join("bench.toml");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    fs::write(&config_path, bench_config(&example, dir.path())?)
        .context("writing the benchmark config")?;

    let addr = free_port()?;
    let log = dir.path().join("backchannel.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_backchannel"));
    command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .arg("--listen")
        .arg(addr.to_string())
        .env("BACKCHANNEL_LOG", "info")
        .env_remove("SENDGRID_VERIFICATION_KEY")
        .env_remove("SLACK_BOT_TOKEN");
    let mut server = ChildGuard::spawn("backchannel", command, log)?;
    println!(
        "  store:  {} (pid {})",
        dir.path().join("backchannel.db").display(),
        server.pid()
    );
    wait_ready(client, &mut server, &format!("http://{addr}/healthz")).await?;

    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let batches = make_batches(settings.events, |out, i| {
        sendgrid_event(out, nonce, i, groups, now_s)
    });
    let ingest: Uri = format!("http://{addr}/ingest/sendgrid").parse()?;
    let mut report = drive(
        settings,
        client,
        &mut server,
        ingest,
        batches,
        "backchannel",
        groups,
    )
    .await?;

    // The rule engine consumes durable batches after they are answered; give it a
    // moment (bounded) so the rule-group gauge reflects every event.
    let metrics_url = format!("http://{addr}/metrics");
    let mut metrics = get_text(client, &metrics_url).await?;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let again = get_text(client, &metrics_url).await?;
        let settled = metric_value(&again, "backchannel_rule_groups").is_some()
            && metric_value(&again, "backchannel_rule_groups")
                == metric_value(&metrics, "backchannel_rule_groups");
        metrics = again;
        if settled {
            break;
        }
    }
    report.accepted_metric = Some(metric_sum(&metrics, "backchannel_events_accepted_total"));
    report.rule_groups = metric_value(&metrics, "backchannel_rule_groups");
    let duplicates = metric_sum(&metrics, "backchannel_events_duplicate_total");
    let rejected = metric_lines(&metrics, "backchannel_requests_rejected_total");
    println!(
        "  /metrics: backchannel_events_accepted_total {} (sent {}), duplicates {duplicates}, \
         requests rejected {rejected}, rule groups {}, alerts firing {}",
        report.accepted_metric.unwrap_or(0.0),
        report.sent,
        report
            .rule_groups
            .map_or("not reported".to_string(), |g| g.to_string()),
        metric_value(&metrics, "backchannel_alerts_firing")
            .map_or("not reported".to_string(), |a| a.to_string()),
    );
    finish(&mut server, &mut report)?;
    Ok(report)
}

/// The benchmark config: `config/example.toml` with the store in `dir`, the `sendgrid`
/// source unsigned with its rules, and the `log` contact only.
fn bench_config(example: &Path, dir: &Path) -> anyhow::Result<String> {
    let text =
        fs::read_to_string(example).with_context(|| format!("reading {}", example.display()))?;
    let mut config: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", example.display()))?;
    let missing = |key: &str| anyhow!("{}: expected a [{key}] table", example.display());

    let store = config
        .entry("store")
        .or_insert_with(|| toml::Table::new().into());
    let store = store.as_table_mut().ok_or_else(|| missing("store"))?;
    store.insert(
        "path".into(),
        dir.join("backchannel.db").display().to_string().into(),
    );

    if let Some(templates) = config
        .get_mut("templates")
        .and_then(toml::Value::as_table_mut)
        && let Some(toml::Value::String(templates_dir)) = templates.get_mut("dir")
    {
        let base = example.parent().unwrap_or(Path::new("."));
        *templates_dir = base.join(&*templates_dir).display().to_string();
    }

    let sources = config
        .get_mut("sources")
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| missing("sources"))?;
    let mut sendgrid = sources
        .get("sendgrid")
        .cloned()
        .ok_or_else(|| missing("sources.sendgrid"))?;
    sendgrid
        .as_table_mut()
        .ok_or_else(|| missing("sources.sendgrid"))?
        .insert("verification_key".into(), "".into());
    sources.clear();
    sources.insert("sendgrid".into(), sendgrid);
    // Only the SendGrid rules: the others would only add matcher checks for kinds the
    // load never has, and name sources the benchmark does not configure.
    let sendgrid_only = |rule: &toml::Value| {
        let matcher = rule.get("match");
        let list = |key: &str| {
            matcher
                .and_then(|m| m.get(key))
                .and_then(toml::Value::as_array)
                .map(|a| a.iter().filter_map(toml::Value::as_str).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let (kinds, sources) = (list("kinds"), list("sources"));
        (!kinds.is_empty() || !sources.is_empty())
            && kinds.iter().all(|k| k.starts_with("sendgrid."))
            && sources.iter().all(|s| *s == "sendgrid")
    };
    if let Some(toml::Value::Array(rules)) = config.get_mut("rules") {
        rules.retain(sendgrid_only);
    }
    config.remove("api");

    let contacts = config
        .get_mut("contacts")
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| missing("contacts"))?;
    let log = contacts
        .get("log")
        .cloned()
        .ok_or_else(|| missing("contacts.log"))?;
    contacts.clear();
    contacts.insert("log".into(), log);

    if let Some(routes) = config.get_mut("routes").and_then(toml::Value::as_array_mut) {
        for route in routes.iter_mut().filter_map(toml::Value::as_table_mut) {
            if let Some(list) = route
                .get_mut("contacts")
                .and_then(toml::Value::as_array_mut)
            {
                list.retain(|c| c.as_str() == Some("log"));
            }
        }
    }
    Ok(toml::to_string(&config)?)
}

/// One SendGrid event of about 370 bytes. Event `i` goes to domain `i % groups`; its
/// `sg_event_id` and `sg_message_id` are unique (the nonce keeps runs apart).
fn sendgrid_event(out: &mut String, nonce: u64, i: usize, groups: usize, now_s: u64) {
    let h = splitmix64(nonce ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let domain = i % groups;
    let kind = match h % 100 {
        0..=44 => "processed",
        45..=84 => "delivered",
        85..=90 => "deferred",
        91..=95 => "bounce",
        _ => "dropped",
    };
    let categories = ["receipts", "password-reset", "newsletter", "onboarding"];
    let _ = write!(
        out,
        r#"{{"email":"user{}@customer{domain}.example.com","timestamp":{now_s},"smtp-id":"<{:011x}.{:x}@ismtpd-555>","event":"{kind}","category":["{}"],"sg_event_id":"{:010x}{:012x}","sg_message_id":"{:011x}.filter0001.{i}.5515E0B88.0""#,
        h % 100_000,
        h >> 20,
        i,
        categories[(h >> 20) as usize % categories.len()],
        nonce & 0xff_ffff_ffff,
        i,
        h.rotate_left(17) >> 20,
    );
    match kind {
        "delivered" => out.push_str(r#","response":"250 2.0.0 OK  1764744000 a1si1234567qkb.42 - gsmtp","ip":"168.245.12.34","tls":1"#),
        "deferred" => out.push_str(r#","response":"421 4.7.28 Try again later, closing connection.","attempt":"3""#),
        "bounce" => out.push_str(
            r#","reason":"550 5.1.1 The email account that you tried to reach does not exist.","status":"5.1.1","type":"bounce","bounce_classification":"Invalid Address""#,
        ),
        "dropped" => out.push_str(r#","reason":"Bounced Address","status":"5.0.0""#),
        _ => out.push_str(r#","pool":{"name":"transactional","id":210}"#),
    }
    let _ = write!(
        out,
        r#","tenant_id":"tenant-{}","order_id":"ord-{:08}"}}"#,
        h % 97,
        i
    );
}

// ---------------------------------------------------------------------------------
// Alertmanager
// ---------------------------------------------------------------------------------

async fn bench_alertmanager(
    settings: &Settings,
    client: &HttpClient,
    binary: &Path,
    groups: usize,
) -> anyhow::Result<Report> {
    println!("\n== Alertmanager, {groups} groups ==");
    let dir = tempfile::Builder::new()
        .prefix("alertmanager-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let config_path = dir.path().join("alertmanager.yml");
    fs::write(
        &config_path,
        "route:\n  receiver: 'null'\n  group_by: ['...']\n  group_wait: 30s\n  group_interval: 5m\n  repeat_interval: 4h\n\
         receivers:\n  - name: 'null'\n",
    )?;
    let addr = free_port()?;
    let log = dir.path().join("alertmanager.log");
    let mut command = Command::new(binary);
    command
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn");
    let mut server = ChildGuard::spawn("alertmanager", command, log)?;
    println!("  binary: {} (pid {})", binary.display(), server.pid());
    wait_ready(client, &mut server, &format!("http://{addr}/-/ready")).await?;

    let now = chrono::Utc::now();
    let starts = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ends =
        (now + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let batches = make_batches(settings.events, |out, i| {
        alert(out, nonce, i, groups, &starts, &ends)
    });
    let uri: Uri = format!("http://{addr}/api/v2/alerts").parse()?;
    let mut report = drive(
        settings,
        client,
        &mut server,
        uri,
        batches,
        "Alertmanager",
        groups,
    )
    .await?;
    finish(&mut server, &mut report)?;
    Ok(report)
}

/// One alert of about the size of a SendGrid event; alert `i` has the label set of group
/// `i % groups`.
fn alert(out: &mut String, nonce: u64, i: usize, groups: usize, starts: &str, ends: &str) {
    let group = i % groups;
    let _ = write!(
        out,
        r#"{{"labels":{{"alertname":"SendgridBounceSpike","domain":"customer{group}.example.com","severity":"warning","source":"sendgrid"}},"annotations":{{"summary":"SendGrid bounces to customer{group}.example.com","sg_event_id":"{:010x}{:012x}","reason":"550 5.1.1 The email account that you tried to reach does not exist."}},"startsAt":"{starts}","endsAt":"{ends}"}}"#,
        nonce & 0xff_ffff_ffff,
        i,
    );
}

// ---------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------

/// One request body: a JSON array and the number of items in it.
struct Batch {
    body: Bytes,
    items: usize,
}

/// `events` items as JSON arrays of up to `BATCH_EVENTS`, built before the clock starts.
fn make_batches(events: usize, mut item: impl FnMut(&mut String, usize)) -> Arc<Vec<Batch>> {
    let mut batches = Vec::with_capacity(events.div_ceil(BATCH_EVENTS));
    let mut start = 0;
    while start < events {
        let end = (start + BATCH_EVENTS).min(events);
        let mut body = String::with_capacity((end - start) * 400 + 2);
        body.push('[');
        for i in start..end {
            if i > start {
                body.push(',');
            }
            item(&mut body, i);
        }
        body.push(']');
        batches.push(Batch {
            body: Bytes::from(body),
            items: end - start,
        });
        start = end;
    }
    Arc::new(batches)
}

#[derive(Default)]
struct WorkerStats {
    ok: usize,
    requests: usize,
    retries: u64,
    failures: Vec<String>,
    latencies: Vec<Duration>,
    /// The body of the first 503, to say why the server pushed back.
    first_503: Option<String>,
}

/// Posts every batch with `settings.concurrency` workers sharing one keep-alive pool,
/// then reads the child's resource use.
async fn drive(
    settings: &Settings,
    client: &HttpClient,
    server: &mut ChildGuard,
    uri: Uri,
    batches: Arc<Vec<Batch>>,
    system: &'static str,
    groups: usize,
) -> anyhow::Result<Report> {
    let sent: usize = batches.iter().map(|b| b.items).sum();
    let body_bytes: usize = batches.iter().map(|b| b.body.len()).sum();
    let first: serde_json::Value =
        serde_json::from_slice(&batches[0].body).context("generated batch is not JSON")?;
    let first_len = first.as_array().map_or(0, Vec::len);
    if first_len != batches[0].items {
        bail!(
            "generated batch holds {first_len} items, expected {}",
            batches[0].items
        );
    }
    println!(
        "  posting {sent} items in {} requests ({:.0} bytes per item, {:.1} MiB in all)",
        batches.len(),
        body_bytes as f64 / sent as f64,
        body_bytes as f64 / 1_048_576.0
    );

    let idle_rss_kib = proc_status_kib(server.pid(), "VmRSS:").unwrap_or(0);
    let cpu_before = cpu_ticks(&server.pid().to_string());
    let client_cpu_before = cpu_ticks("self");
    let machine_before = machine_busy_ticks();
    let written_before = proc_io(server.pid(), "wchar:");
    let loadavg = fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + settings.timeout;
    let mut workers = Vec::with_capacity(settings.concurrency);
    for _ in 0..settings.concurrency {
        let (client, uri, batches, next) =
            (client.clone(), uri.clone(), batches.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            worker(client, uri, batches, next, deadline).await
        }));
    }
    let mut stats = WorkerStats::default();
    for handle in workers {
        let w = handle.await.context("load worker panicked")?;
        stats.ok += w.ok;
        stats.requests += w.requests;
        stats.retries += w.retries;
        stats.failures.extend(w.failures);
        stats.latencies.extend(w.latencies);
        stats.first_503 = stats.first_503.or(w.first_503);
    }
    let elapsed = started.elapsed();
    let machine_ticks = machine_busy_ticks().saturating_sub(machine_before);
    let unsent = batches.len().saturating_sub(next.load(Ordering::Relaxed));
    if unsent > 0 {
        stats.failures.push(format!(
            "{unsent} batches not sent: the {}s time limit passed",
            settings.timeout.as_secs()
        ));
    }
    if let Some(status) = server.exited() {
        bail!(
            "{system} exited during the run ({status}); its log ends with:\n{}",
            server.log_tail()
        );
    }
    stats.latencies.sort_unstable();
    let mut report = Report {
        system,
        groups,
        sent,
        ok: stats.ok,
        requests: stats.requests,
        retries: stats.retries,
        failures: stats.failures,
        elapsed,
        p50: percentile(&stats.latencies, 50.0),
        p99: percentile(&stats.latencies, 99.0),
        body_bytes,
        idle_rss_kib,
        peak_rss_kib: 0,
        cpu_secs: 0.0,
        client_cpu_secs: 0.0,
        written_bytes: proc_io(server.pid(), "wchar:").saturating_sub(written_before),
        others_cpu_secs: 0.0,
        loadavg,
        accepted_metric: None,
        rule_groups: None,
    };
    let server_ticks = cpu_ticks(&server.pid().to_string()).saturating_sub(cpu_before);
    let client_ticks = cpu_ticks("self").saturating_sub(client_cpu_before);
    report.cpu_secs = server_ticks as f64 / TICKS_PER_SEC;
    report.client_cpu_secs = client_ticks as f64 / TICKS_PER_SEC;
    report.others_cpu_secs =
        machine_ticks.saturating_sub(server_ticks + client_ticks) as f64 / TICKS_PER_SEC;
    println!(
        "  {} of {sent} accepted (2xx) in {:.2} s: {:.0}/s, {} requests, {} retries after 503, \
         p50 {:.1} ms, p99 {:.1} ms",
        report.ok,
        elapsed.as_secs_f64(),
        report.rate(),
        report.requests,
        report.retries,
        ms(report.p50),
        ms(report.p99),
    );
    if let Some(body) = &stats.first_503 {
        println!("  first 503 answer: {body}");
    }
    for failure in report.failures.iter().take(5) {
        println!("  failure: {failure}");
    }
    Ok(report)
}

async fn worker(
    client: HttpClient,
    uri: Uri,
    batches: Arc<Vec<Batch>>,
    next: Arc<AtomicUsize>,
    deadline: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(batch) = batches.get(index) else {
            break;
        };
        let mut retries = 0;
        loop {
            let started = Instant::now();
            let request = Request::builder()
                .method(Method::POST)
                .uri(uri.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(batch.body.clone()))
                .expect("valid request");
            stats.requests += 1;
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, send(&client, request)).await;
            match answer {
                Ok(Ok((status, _, _))) if status.is_success() => {
                    stats.latencies.push(started.elapsed());
                    stats.ok += batch.items;
                    break;
                }
                Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, retry_after, body)))
                    if retries < MAX_RETRIES_PER_BATCH && Instant::now() < deadline =>
                {
                    retries += 1;
                    stats.retries += 1;
                    stats
                        .first_503
                        .get_or_insert_with(|| truncate(&body, 200).to_string());
                    tokio::time::sleep(
                        retry_after
                            .unwrap_or(Duration::from_secs(1))
                            .min(MAX_RETRY_AFTER),
                    )
                    .await;
                }
                Ok(Ok((status, _, body))) => {
                    stats.failures.push(format!(
                        "batch {index}: HTTP {status} after {retries} retries: {}",
                        truncate(&body, 200)
                    ));
                    break;
                }
                Ok(Err(error)) => {
                    stats.failures.push(format!("batch {index}: {error:#}"));
                    break;
                }
                Err(_) => {
                    stats.failures.push(format!(
                        "batch {index}: no answer within {}s",
                        REQUEST_TIMEOUT.as_secs()
                    ));
                    break;
                }
            }
        }
    }
    stats
}

/// Sends `request` and reads the whole answer: status, `Retry-After`, body text.
async fn send(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Option<Duration>, String)> {
    let response = client.request(request).await?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.into_body().collect().await?.to_bytes();
    Ok((
        status,
        retry_after,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

async fn get_text(client: &HttpClient, url: &str) -> anyhow::Result<String> {
    let request = Request::get(url).body(Full::new(Bytes::new()))?;
    let (status, _, body) = tokio::time::timeout(REQUEST_TIMEOUT, send(client, request))
        .await
        .map_err(|_| anyhow!("GET {url}: no answer"))??;
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    Ok(body)
}

/// Polls `url` until it answers 200, the child exits, or `START_TIMEOUT` passes.
async fn wait_ready(client: &HttpClient, server: &mut ChildGuard, url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if let Some(status) = server.exited() {
            bail!(
                "{} exited before answering ({status}); its log ends with:\n{}",
                server.name,
                server.log_tail()
            );
        }
        let request = Request::get(url).body(Full::new(Bytes::new()))?;
        if let Ok(Ok((StatusCode::OK, _, _))) =
            tokio::time::timeout(Duration::from_secs(2), send(client, request)).await
        {
            println!("  ready after {:.2} s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{} did not answer {url} within {}s; its log ends with:\n{}",
        server.name,
        START_TIMEOUT.as_secs(),
        server.log_tail()
    )
}

/// Records the child's peak memory, then stops it.
fn finish(server: &mut ChildGuard, report: &mut Report) -> anyhow::Result<()> {
    if let Some(status) = server.exited() {
        bail!(
            "{} exited during the run ({status}); its log ends with:\n{}",
            server.name,
            server.log_tail()
        );
    }
    report.peak_rss_kib = proc_status_kib(server.pid(), "VmHWM:").unwrap_or(0);
    println!(
        "  RSS: {:.1} MiB idle before the load, {:.1} MiB peak (VmHWM); wrote {:.1} MiB during \
         the load",
        kib_to_mib(report.idle_rss_kib),
        kib_to_mib(report.peak_rss_kib),
        report.written_bytes as f64 / 1_048_576.0,
    );
    println!(
        "  CPU during the load: {:.2} s server, {:.2} s load generator, {:.2} s other \
         processes (load average at start {})",
        report.cpu_secs, report.client_cpu_secs, report.others_cpu_secs, report.loadavg
    );
    server.stop();
    Ok(())
}

// ---------------------------------------------------------------------------------
// Child processes and /proc
// ---------------------------------------------------------------------------------

/// A child process killed when dropped, so an error or panic never leaves it running.
struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> anyhow::Result<Self> {
        let stderr =
            fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Self { name, child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port: bind port 0, note it, release it.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Busy CPU time of the whole machine (all CPUs, everything but idle and iowait), in
/// ticks, from the first line of `/proc/stat`.
fn machine_busy_ticks() -> u64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(cpu) = stat.lines().next() else {
        return 0;
    };
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is included in user).
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    ticks.iter().take(8).sum::<u64>().saturating_sub(idle)
}

/// A field of `/proc/<pid>/io` (bytes); 0 when unreadable.
fn proc_io(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix(field).and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// A `kB` line of `/proc/<pid>/status`, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// User plus system CPU time of `/proc/<which>` (a pid or `self`), in ticks.
fn cpu_ticks(which: &str) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{which}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name start at field 3 (state); utime and
    // stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

// ---------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------

/// Every series of `name` as `labels value`, or "0" when there is none.
fn metric_lines(text: &str, name: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .map(str::trim)
        .collect();
    if lines.is_empty() {
        "0".into()
    } else {
        lines.join(", ")
    }
}

/// Sum of every series of `name` in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    metric_values(text, name).fold(0.0, |sum, v| sum + v)
}

fn metric_value(text: &str, name: &str) -> Option<f64> {
    metric_values(text, name).next()
}

fn metric_values<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            line.rsplit(' ').next()?.parse().ok()
        })
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_summary(settings: &Settings, reports: &[Report]) -> bool {
    println!(
        "\n== summary ({} items per run, batches of {BATCH_EVENTS}, {} connections) ==",
        settings.events, settings.concurrency
    );
    println!(
        "{:<13} {:>8} {:>9} {:>7} {:>8} {:>11} {:>8} {:>8} {:>10} {:>10} {:>9}",
        "system",
        "groups",
        "accepted",
        "retries",
        "seconds",
        "items/s",
        "p50 ms",
        "p99 ms",
        "idle MiB",
        "peak MiB",
        "CPU s"
    );
    for r in reports {
        println!(
            "{:<13} {:>8} {:>9} {:>7} {:>8.2} {:>11.0} {:>8.1} {:>8.1} {:>10.1} {:>10.1} {:>9.2}",
            r.system,
            r.groups,
            r.ok,
            r.retries,
            r.elapsed.as_secs_f64(),
            r.rate(),
            ms(r.p50),
            ms(r.p99),
            kib_to_mib(r.idle_rss_kib),
            kib_to_mib(r.peak_rss_kib),
            r.cpu_secs,
        );
    }
    let mut all_ok = true;
    for r in reports {
        let mb_per_s = r.body_bytes as f64 / 1_048_576.0 / r.elapsed.as_secs_f64().max(1e-9);
        let per_item_us = r.cpu_secs * 1e6 / r.ok.max(1) as f64;
        let written_ratio = r.written_bytes as f64 / r.body_bytes.max(1) as f64;
        println!(
            "{:<13} {:>8}: {mb_per_s:.1} MiB/s of request bodies, {per_item_us:.1} µs server \
             CPU per item, \
             wrote {written_ratio:.1}x the request bytes, {:.1} CPU-s used by other processes \
             during the run",
            r.system, r.groups, r.others_cpu_secs
        );
        if r.ok != r.sent || !r.failures.is_empty() {
            println!(
                "  CHECK FAILED: {} of {} items answered 2xx, {} failures",
                r.ok,
                r.sent,
                r.failures.len()
            );
            all_ok = false;
        }
        if let Some(accepted) = r.accepted_metric {
            if accepted == r.sent as f64 {
                println!(
                    "  durability check ok: backchannel_events_accepted_total = {accepted} = \
                     events sent"
                );
            } else {
                println!(
                    "  CHECK FAILED: backchannel_events_accepted_total = {accepted}, events \
                     sent = {}",
                    r.sent
                );
                all_ok = false;
            }
        }
        if let Some(groups) = r.rule_groups {
            println!(
                "  backchannel_rule_groups = {groups} (rule groups held by the engine at the end)"
            );
        }
    }
    for &groups in &settings.groups {
        let of = |system: &str| {
            reports
                .iter()
                .find(|r| r.system == system && r.groups == groups)
        };
        if let (Some(bc), Some(am)) = (of("backchannel"), of("Alertmanager")) {
            println!(
                "ratio at {groups} groups: backchannel {:.0} events/s / Alertmanager {:.0} \
                 alerts/s = {:.2}",
                bc.rate(),
                am.rate(),
                bc.rate() / am.rate().max(1e-9)
            );
        }
    }
    if settings.alertmanager.is_none() {
        println!("Alertmanager comparison {}", settings.alertmanager_note);
    }
    all_ok
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
