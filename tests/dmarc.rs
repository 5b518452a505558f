//! DMARC aggregate reports through the real server: every shared sample posted over
//! HTTP, the refusals, an alert in a fake Slack, the `import` command, and the mailbox
//! path against a real Dovecot on loopback with the field cases B15 and B16.

mod support;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use backchannel::clock;
use base64::Engine;
use support::{SlackFake, sample, start_server};

const TOKEN: &str = "report-token-0123";

/// The B11 report of the field cases (stray `xs:schema`), rpt-0001, 3 failing messages.
const B11: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dmarc/cases/b11_stray_xs_schema.xml"
));

/// B16 #2: gzip of "unused".
const B16_UNUSED_BASE64: &str = "H4sIAAAAAAAC/yvNKy1OTQEA+UgslAYAAAA=";

fn b16_long_range() -> String {
    B11.replace("rpt-0001", "rpt-0004")
        .replace("<end>1700086399</end>", "<end>1700172800</end>")
}

fn unused() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(B16_UNUSED_BASE64)
        .unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn billion_laughs() -> String {
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE feedback [\n");
    xml.push_str(" <!ENTITY lol \"lol\">\n");
    for level in 1..10 {
        let previous = if level == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", level - 1)
        };
        let expansion = format!("&{previous};").repeat(10);
        xml.push_str(&format!(" <!ENTITY lol{level} \"{expansion}\">\n"));
    }
    xml.push_str("]>\n<feedback><report_metadata><org_name>&lol9;</org_name>");
    xml.push_str("</report_metadata></feedback>\n");
    xml
}

/// An email with one base64 part per `(content type, file name, bytes)`.
fn email(subject: &str, parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let boundary = "=_report_boundary_7f3a";
    let mut text = format!(
        "From: noreply-dmarc@reporter.example.net\r\nTo: dmarc@example.com\r\n\
         Subject: {subject}\r\nMessage-ID: <{}@reporter.example.net>\r\n\
         Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         This is an aggregate report.\r\n",
        subject.replace(' ', "-")
    );
    for (content_type, name, bytes) in parts {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        text.push_str(&format!(
            "--{boundary}\r\nContent-Type: {content_type}; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        ));
        for line in encoded.as_bytes().chunks(76) {
            text.push_str(std::str::from_utf8(line).unwrap());
            text.push_str("\r\n");
        }
    }
    text.push_str(&format!("--{boundary}--\r\n"));
    text.into_bytes()
}

/// The four parts of B15: (a) gzip as octet-stream, (b) gzip named zip, (c) plain XML,
/// (d) gzip inside gzip.
fn b15_email() -> Vec<u8> {
    let xml = B11.as_bytes();
    let name = "example.net!example.com!1700000000!1700086399";
    email(
        "Report domain: example.com Submitter: example.net",
        &[
            (
                "application/octet-stream",
                &format!("{name}.xml.gz"),
                &gzip(xml),
            ),
            ("application/zip", &format!("{name}.zip"), &gzip(xml)),
            ("text/xml", "report.xml", xml),
            (
                "application/gzip",
                &format!("{name}.xml.gz"),
                &gzip(&gzip(xml)),
            ),
        ],
    )
}

fn config(source_id: &str, slack: &SlackFake, mailbox: &str) -> String {
    format!(
        r##"
[server]
eval_interval = "100ms"
max_body_bytes = 1048576
[store]
path = "{{db}}"
[sources.{source_id}]
type = "dmarc"
token = "{TOKEN}"
{mailbox}
[contacts.slack]
type = "slack"
token = "xoxb-test-token"
channel = "#dmarc"
api_url = "{}"
delivery_deadline = "1h"
[[routes]]
contacts = ["slack"]
repeat_interval = "4h"
[[rules]]
name = "dmarc-failing"
kind = "threshold"
match = {{ kinds = ["dmarc.record"], labels = {{ dmarc = "fail" }} }}
group_by = ["domain"]
window = "1h"
threshold = 3
summary = "{{{{facts.count}}}} messages failing DMARC for {{{{labels.domain}}}}"
"##,
        slack.api_url()
    )
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Records each sample holds; the failure reports are refused.
const SAMPLES: &[(&str, Option<u64>)] = &[
    (
        "amazonses.com!stalw.art!1663545600!1663632000.xml.gz",
        Some(1),
    ),
    ("aol_single_quoted_xmlns.xml", Some(1)),
    ("empty_reason.xml", Some(1)),
    (
        "estadocuenta1.infonacot.gob.mx!example.com!1536853302!1536939702!2940.xml.zip",
        Some(1),
    ),
    ("forensic/dmarc_ruf_report_linkedin.crlf.eml", None),
    ("forensic/exim_plain_text_only_no_arf_part.eml", None),
    ("gmx_dmarc2_namespace_psl.xml", Some(1)),
    ("google.com!borschow.com!1549929600!1550015999.zip", Some(1)),
    ("google.com_nice-input.xml.gz", Some(20)),
    ("hardfail_empty_dkim_fields.xml", Some(1)),
    ("mail.ru!stalw.art!1667865600!1667952000.xml.gz", Some(1)),
    ("old_draft_from_wiki.xml", Some(1)),
    (
        "protection.outlook.com!example.com!1711756800!1711843200.xml",
        Some(1),
    ),
    ("report_with_upper_cased_pass.xml", Some(1)),
    (
        "rfc9990-example.net!example.com!1700000000!1700086399.xml",
        Some(2),
    ),
    ("stalwart_fastmail_trusted_forwarder.xml", Some(4)),
    ("stalwart_v2_extensions_unknown_tags.xml", Some(1)),
];

#[tokio::test]
async fn every_sample_is_answered_over_http() {
    let fake = SlackFake::start().await;
    let server = start_server(&config("dmarc-samples", &fake, ""), clock::system()).await;
    let url = format!("{}/ingest/dmarc-samples", server.base);

    // Every file in the fixtures is in the table, so a new sample cannot go untested.
    let mut files = Vec::new();
    for dir in ["dmarc", "dmarc/forensic"] {
        for entry in std::fs::read_dir(support::samples().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let relative = path.strip_prefix(support::samples().join("dmarc")).unwrap();
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    let listed: Vec<&str> = SAMPLES.iter().map(|(f, _)| *f).collect();
    assert_eq!(files, listed);

    let auth = bearer();
    for (file, records) in SAMPLES {
        let body = sample(&format!("dmarc/{file}"));
        let reply = server
            .client
            .post(&url, &[("authorization", &auth)], body)
            .await;
        match records {
            Some(records) => {
                assert_eq!(reply.status, 200, "{file}: {}", reply.text());
                let answer = reply.json();
                assert_eq!(answer["accepted"], records + 1, "{file}: {answer}");
                assert_eq!(answer["duplicates"], 0, "{file}: {answer}");
                assert_eq!(answer["skipped"], 0, "{file}: {answer}");
            }
            None => {
                assert_eq!(reply.status, 415, "{file}: {}", reply.text());
                let error = reply.json()["error"].as_str().unwrap().to_string();
                assert!(
                    error.contains("DMARC failure (ruf) report"),
                    "{file}: {error}"
                );
            }
        }
    }

    // A redelivered report counts once.
    let again = server
        .client
        .post(
            &url,
            &[("authorization", &auth)],
            sample("dmarc/google.com_nice-input.xml.gz"),
        )
        .await
        .json();
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(21))
    );

    // The report longer than a day is accepted with a warning.
    let reply = server
        .client
        .post(
            &url,
            &[("authorization", &auth)],
            sample("dmarc/report_with_upper_cased_pass.xml"),
        )
        .await
        .json();
    assert_eq!(
        reply["warnings"][0],
        "report aggr_report_example.com_20191202_1638 from example.com: \
         date range 97h exceeds 24h"
    );
    server.running.stop().await;
}

/// A body, extra headers, and the status and reason it must be answered with.
type Refusal = (
    Vec<u8>,
    &'static [(&'static str, &'static str)],
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_input_is_refused_with_a_reason() {
    let fake = SlackFake::start().await;
    let server = start_server(&config("dmarc-refusals", &fake, ""), clock::system()).await;
    let url = format!("{}/ingest/dmarc-refusals", server.base);
    let auth = bearer();
    let good = B11.as_bytes().to_vec();

    let reply = server.client.post(&url, &[], good.clone()).await;
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .text()
            .contains("missing Authorization: Bearer header"),
        "{}",
        reply.text()
    );
    let reply = server
        .client
        .post(&url, &[("authorization", "Bearer nope")], good.clone())
        .await;
    assert_eq!(reply.status, 401);
    assert!(!reply.text().contains(TOKEN));

    let mut truncated = gzip(B11.as_bytes());
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<Refusal> = vec![
        (unused(), &[], 415, "decompressed content is not XML"),
        (
            b"just text".to_vec(),
            &[],
            415,
            "content is not gzip, zip or XML",
        ),
        (truncated, &[], 400, "gzip data is corrupt"),
        (
            billion_laughs().into_bytes(),
            &[],
            400,
            "declares its own entities",
        ),
        (
            vec![b'<'; 2 * 1024 * 1024],
            &[],
            413,
            "larger than the 1048576 bytes",
        ),
        (
            gzip(&vec![b' '; 8 * 1024 * 1024]),
            &[],
            413,
            "decompressed content exceeds",
        ),
        (
            gzip(B11.as_bytes()),
            &[("content-encoding", "gzip")],
            415,
            "content-encoding",
        ),
    ];
    for (body, headers, status, reason) in cases {
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let started = Instant::now();
        let reply = server.client.post(&url, &all, body).await;
        assert_eq!(reply.status, status, "{reason}: {}", reply.text());
        assert!(
            reply.json()["error"].as_str().unwrap().contains(reason),
            "{}",
            reply.text()
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{reason}");
    }

    // Not-UTF-8 bytes and a wrong content type change nothing about a good report.
    let mut latin = B11.replace(
        "reporter.example.net</org_name>",
        "reporter\u{1}</org_name>",
    );
    latin = latin.replace("<email>dmarc-noreply", "<email>\u{FFFD}dmarc-noreply");
    let mut bytes = latin.into_bytes();
    let at = bytes
        .windows(3)
        .position(|w| w == "\u{FFFD}".as_bytes())
        .unwrap();
    bytes.splice(at..at + 3, [0xE9]);
    let reply = server
        .client
        .post(
            &url,
            &[("authorization", &auth), ("content-type", "text/plain")],
            bytes,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], 2);
    assert!(reply.text().contains("invalid UTF-8"), "{}", reply.text());
    server.running.stop().await;
}

#[tokio::test]
async fn failing_messages_alert_and_every_b15_part_is_one_report() {
    let fake = SlackFake::start().await;
    let server = start_server(&config("dmarc-alerts", &fake, ""), clock::system()).await;
    let url = format!("{}/ingest/dmarc-alerts", server.base);
    let auth = bearer();

    // An email posted whole: its four parts are the same report, counted once.
    let reply = server
        .client
        .post(&url, &[("authorization", &auth)], b15_email())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["duplicates"].as_u64()),
        (Some(2), Some(6))
    );
    assert!(
        answer["warnings"][0]
            .as_str()
            .unwrap()
            .contains("non-conformant XML repaired: stray xs:schema"),
        "{answer}"
    );

    let sent = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    assert_eq!(
        sent[0].body["text"],
        "Firing [warning]: 3 messages failing DMARC for example.com"
    );
    server.running.stop().await;
}

#[tokio::test]
async fn import_posts_each_file_and_fails_if_one_is_refused() {
    let fake = SlackFake::start().await;
    let server = start_server(&config("dmarc-import", &fake, ""), clock::system()).await;
    let dir = tempfile::tempdir().unwrap();
    let cli_config = dir.path().join("cli.toml");
    let text = config("dmarc-import", &fake, "")
        .replace(
            "{db}",
            &dir.path().join("unused.sqlite").display().to_string(),
        )
        .replace(
            "[server]\n",
            &format!("[server]\nlisten = \"{}\"\n", server.running.addr),
        );
    std::fs::write(&cli_config, text).unwrap();
    let fixtures = support::samples().join("dmarc");
    let good = fixtures.join("google.com!borschow.com!1549929600!1550015999.zip");
    let refused = fixtures.join("forensic/exim_plain_text_only_no_arf_part.eml");

    let run = |args: Vec<&Path>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_backchannel"));
        command
            .arg("import")
            .arg("--config")
            .arg(&cli_config)
            .arg("--source")
            .arg("dmarc-import")
            .args(args)
            .env("BACKCHANNEL_LOG", "error");
        async move { command.output().await.unwrap() }
    };
    let output = run(vec![&good, &refused]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("{}: 200 ", good.display())),
        "{stdout}"
    );
    assert!(lines[0].contains("\"accepted\":2"), "{stdout}");
    assert!(
        lines[1].starts_with(&format!("{}: 415 ", refused.display())),
        "{stdout}"
    );
    assert!(lines[1].contains("failure (ruf) report"), "{stdout}");

    // Again through --url: the same file is now a duplicate, and nothing is refused.
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_backchannel"));
    let output = command
        .args([
            "import",
            "--source",
            "dmarc-import",
            "--url",
            &server.base,
            "--config",
        ])
        .arg(&cli_config)
        .arg(&good)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("\"duplicates\":2"), "{stdout}");
    server.running.stop().await;
}

/// A Dovecot IMAP server on loopback, with one user and maildirs in a temp dir.
struct Dovecot {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

const IMAP_USER: &str = "reports";
const IMAP_PASSWORD: &str = "imap-secret";

impl Dovecot {
    fn start() -> Self {
        let binary = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "dovecot is not installed; the mailbox test needs a real IMAP server: \
                     apt-get install dovecot-imapd (.ci/run does)"
                )
            });
        // Dovecot cannot listen on port 0: take a free port and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        use std::os::unix::fs::PermissionsExt;
        // Login processes run as dovecot's own unprivileged user and must reach base_dir.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["mail", "home"] {
            std::fs::create_dir(root.join(sub)).unwrap();
            std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(0o777))
                .unwrap();
        }
        std::fs::write(
            root.join("passwd"),
            format!("{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}::::::\n"),
        )
        .unwrap();
        // Dovecot refuses uid 0 for mail: as root (CI), mail belongs to nobody.
        let (uid, gid) = match (id("-u"), id("-g")) {
            (0, _) => (65534, 65534),
            ids => ids,
        };
        let root_text = root.display();
        let conf = format!(
            "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {root_text}/run\n\
             state_dir = {root_text}/state\nlog_path = {root_text}/dovecot.log\n\
             ssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = plain login\n\
             mail_location = maildir:{root_text}/mail/%u\nfirst_valid_uid = 0\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u \
             {root_text}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} \
             home={root_text}/home/%u\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    \
             port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n"
        );
        let conf_path = root.join("dovecot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = std::process::Command::new(binary)
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} does not start: {e}"));
        let server = Self { child, port, dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "dovecot did not listen on {port}: {}",
                std::fs::read_to_string(server.dir.path().join("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    async fn session(&self) -> async_imap::Session<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.unwrap().unwrap();
        client
            .login(IMAP_USER, IMAP_PASSWORD)
            .await
            .map_err(|(e, _)| e)
            .unwrap()
    }
}

fn id(flag: &str) -> u32 {
    let output = std::process::Command::new("id").arg(flag).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // TERM lets the master stop its children; KILL would leave them running.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// UIDs and whether each is flagged, of the messages in `folder`.
async fn folder_messages(
    session: &mut async_imap::Session<tokio::net::TcpStream>,
    folder: &str,
) -> Vec<(String, bool)> {
    use futures_util::StreamExt;
    let mailbox = session.select(folder).await.unwrap();
    if mailbox.exists == 0 {
        return Vec::new();
    }
    let fetches: Vec<_> = session
        .fetch("1:*", "(FLAGS BODY.PEEK[])")
        .await
        .unwrap()
        .collect()
        .await;
    let mut found: Vec<(String, bool)> = fetches
        .into_iter()
        .map(|f| {
            let f = f.unwrap();
            let message = mail_parser::MessageParser::default()
                .parse(f.body().unwrap_or_default())
                .unwrap();
            let subject = message.subject().unwrap_or_default().to_string();
            let flagged = f
                .flags()
                .any(|flag| matches!(flag, async_imap::types::Flag::Flagged));
            (subject, flagged)
        })
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_reports_are_journaled_and_messages_filed() {
    let dovecot = Dovecot::start();
    let mut session = dovecot.session().await;
    let laughs = billion_laughs();
    let long_range = b16_long_range();
    let messages: Vec<(&str, Vec<u8>)> = vec![
        ("b15 four parts", b15_email()),
        (
            "b16 1 gzip",
            email(
                "b16 1 gzip",
                &[("application/gzip", "r1.xml.gz", &gzip(B11.as_bytes()))],
            ),
        ),
        (
            "b16 2 unused",
            email(
                "b16 2 unused",
                &[("application/gzip", "r2.xml.gz", &unused())],
            ),
        ),
        (
            "b16 3 long range",
            email(
                "b16 3 long range",
                &[("text/xml", "r4.xml", long_range.as_bytes())],
            ),
        ),
        (
            "ruf",
            sample("dmarc/forensic/dmarc_ruf_report_linkedin.crlf.eml"),
        ),
        (
            "laughs",
            email("laughs", &[("text/xml", "lol.xml", laughs.as_bytes())]),
        ),
    ];
    for (_, message) in &messages {
        session.append("INBOX", None, None, message).await.unwrap();
    }

    let fake = SlackFake::start().await;
    let mailbox = format!(
        "[sources.dmarc-mail.mailbox]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         username = \"{IMAP_USER}\"\npassword = \"{IMAP_PASSWORD}\"\n\
         processed_folder = \"Reports/Done\"\nfailed_folder = \"Reports/Failed\"\n\
         poll_interval = \"1s\"\n",
        dovecot.port
    );
    let server = start_server(&config("dmarc-mail", &fake, &mailbox), clock::system()).await;

    let started = Instant::now();
    loop {
        let inbox = folder_messages(&mut session, "INBOX").await;
        if inbox.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "messages still in INBOX: {inbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = folder_messages(&mut session, "Reports/Done").await;
    let subjects =
        |list: &[(String, bool)]| list.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>();
    assert_eq!(
        subjects(&done),
        [
            "Report domain: example.com Submitter: example.net",
            "b16 1 gzip",
            "b16 3 long range"
        ]
    );
    assert!(done.iter().all(|(_, flagged)| !flagged), "{done:?}");
    let failed = folder_messages(&mut session, "Reports/Failed").await;
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed.iter().all(|(_, flagged)| *flagged), "{failed:?}");
    let failed_subjects = subjects(&failed);
    assert!(
        failed_subjects.contains(&"b16 2 unused".to_string()),
        "{failed:?}"
    );
    assert!(
        failed_subjects.contains(&"laughs".to_string()),
        "{failed:?}"
    );
    assert!(
        failed_subjects
            .iter()
            .any(|s| s.starts_with("DMARC Failure report")),
        "{failed:?}"
    );

    // rpt-0001 (report and record) once, though it came in five attachments; rpt-0004.
    let metrics = server
        .client
        .get(&format!("{}/metrics", server.base))
        .await
        .text();
    assert!(
        metrics.contains("backchannel_events_accepted_total{source=\"dmarc-mail\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("backchannel_events_duplicate_total{source=\"dmarc-mail\"} 8"),
        "{metrics}"
    );
    let sent = fake.wait_for_ok(1, Duration::from_secs(10)).await;
    let text = sent[0].body["text"].as_str().unwrap();
    assert!(
        text.contains("messages failing DMARC for example.com"),
        "{text}"
    );

    // A later poll finds nothing new to do: the folder stays empty, nothing is resent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(folder_messages(&mut session, "INBOX").await.is_empty());
    assert_eq!(
        folder_messages(&mut session, "Reports/Failed").await.len(),
        3
    );
    let _ = session.logout().await;
    server.running.stop().await;
}
