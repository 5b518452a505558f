//! DMARC aggregate (rua) reports: posted as files to `POST /ingest/{source}` with a
//! bearer token, or fetched from a mailbox.
//!
//! A body is unpacked by its bytes (`unpack.rs`: gzip, zip, XML or an email with
//! report attachments, under size, ratio and depth limits), each document is read by a
//! forgiving XML reader (`xml.rs`), and each report becomes events (`events.rs`). A body
//! holding several reports keeps the good ones when one is bad. The mailbox poller
//! (`mailbox.rs`) submits what it fetches through the same parse.

pub mod events;
pub mod mailbox;
pub mod unpack;
pub mod xml;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::auth::{Auth, RawAuth};
use super::intake::Intake;
use super::{Backchannel, ParsedBatch, Pending, Request, SourceError, Vocabulary};
use crate::config::SourceSettings;
use mailbox::{Mailbox, Tls};

/// A configured DMARC report source.
#[derive(Clone)]
pub struct Dmarc {
    auth: Option<Auth>,
    /// Kept for `backchannel import`, which sends it; never logged.
    token: Option<String>,
    mailbox: Option<Arc<Mailbox>>,
}

impl std::fmt::Debug for Dmarc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dmarc")
            .field("auth", &self.auth)
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Bearer token posted files must carry (`Authorization: Bearer <token>`).
    token: Option<String>,
    /// An IMAP folder to poll for report emails.
    mailbox: Option<RawMailbox>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    /// IMAP server host name.
    host: String,
    /// Port; 993 with `tls = "implicit"`, else 143.
    port: Option<u16>,
    /// `implicit` (IMAPS, the default), `starttls`, or `none`.
    tls: Option<String>,
    username: String,
    password: String,
    /// Folder the reports arrive in.
    folder: Option<String>,
    /// Where messages go once a report in them was accepted.
    processed_folder: Option<String>,
    /// Where messages go (flagged) when nothing in them was accepted.
    failed_folder: Option<String>,
    /// Time between polls.
    poll_interval: Option<String>,
}

pub fn configure(settings: &mut SourceSettings<'_>) -> Option<Arc<dyn Backchannel>> {
    let raw: Settings = settings.parse()?;
    let token = settings.secret("token", raw.token);
    let auth = Auth::configure(
        settings,
        RawAuth {
            token: token.clone(),
            ..RawAuth::default()
        },
    );
    if auth.is_none() {
        settings.warn("no token, so anyone who can reach the server can post reports");
    }
    let mailbox = match raw.mailbox {
        Some(raw) => Some(Arc::new(configure_mailbox(settings, raw)?)),
        None => None,
    };
    Some(Arc::new(Dmarc {
        auth,
        token,
        mailbox,
    }))
}

fn configure_mailbox(settings: &mut SourceSettings<'_>, raw: RawMailbox) -> Option<Mailbox> {
    let tls = match raw.tls.as_deref().unwrap_or("implicit") {
        "implicit" => Tls::Implicit,
        "starttls" => Tls::StartTls,
        "none" => Tls::None,
        other => {
            settings.error(
                "mailbox.tls",
                format!("expected \"implicit\", \"starttls\" or \"none\", found {other:?}"),
            );
            return None;
        }
    };
    let host = raw.host.trim().to_string();
    if host.is_empty() {
        settings.error("mailbox.host", "expected the IMAP server's host name");
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if tls == Tls::None && !loopback {
        settings.warn(format!(
            "mailbox.tls = \"none\" sends the password to {host} unencrypted"
        ));
    }
    let username = settings.secret("mailbox.username", Some(raw.username));
    let password = settings.secret("mailbox.password", Some(raw.password));
    let (Some(username), Some(password)) = (username, password) else {
        settings.error("mailbox.password", "expected both username and password");
        return None;
    };
    let poll_ms = settings.duration(
        "mailbox.poll_interval",
        raw.poll_interval.as_deref(),
        300_000,
    );
    let folder = |value: Option<String>, default: &str| {
        value
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let mailbox = Mailbox {
        host,
        port: raw
            .port
            .unwrap_or(if tls == Tls::Implicit { 993 } else { 143 }),
        tls,
        username,
        password,
        folder: folder(raw.folder, "INBOX"),
        processed_folder: folder(raw.processed_folder, "dmarc-processed"),
        failed_folder: folder(raw.failed_folder, "dmarc-failed"),
        poll_interval: Duration::from_millis(poll_ms.max(1000) as u64),
    };
    if [&mailbox.processed_folder, &mailbox.failed_folder].contains(&&mailbox.folder) {
        settings.error(
            "mailbox.processed_folder",
            "expected processed_folder and failed_folder to differ from folder",
        );
        return None;
    }
    Some(mailbox)
}

impl Backchannel for Dmarc {
    fn verify<'a>(
        &'a self,
        source: &'a str,
        request: Request<'a>,
    ) -> Pending<'a, Result<(), SourceError>> {
        let result = match &self.auth {
            Some(auth) => auth.check(source, &request),
            None => Ok(()),
        };
        Box::pin(std::future::ready(result))
    }

    fn parse(
        &self,
        source: &Arc<str>,
        body: &[u8],
        received_ms: i64,
    ) -> Result<ParsedBatch, SourceError> {
        parse_body(source, body, received_ms)
    }

    fn is_verified(&self) -> bool {
        self.auth.is_some()
    }

    fn background(&self, intake: Intake) -> Option<Pending<'static, ()>> {
        let mailbox = self.mailbox.clone()?;
        Some(Box::pin(mailbox::run(mailbox, intake)))
    }

    fn bearer_token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// Parses a body: every report in it, in order. A body that is one document and fails
/// is refused; in a body of several, each failing document is skipped with its reason.
pub fn parse_body(
    source: &Arc<str>,
    body: &[u8],
    received_ms: i64,
) -> Result<ParsedBatch, SourceError> {
    let items = unpack::unpack(body, &unpack::LIMITS);
    let single = items.len() == 1;
    let mut batch = ParsedBatch::default();
    let mut position = 0;
    for item in items {
        let read = item.document.and_then(|document| {
            let report =
                xml::read_report(&document).map_err(|e| SourceError::BadRequest(e.to_string()))?;
            Ok((report, document))
        });
        match read {
            Ok((report, document)) => events::push_report(
                source,
                &report,
                &document,
                received_ms,
                &mut position,
                &mut batch,
            ),
            Err(error) if single => return Err(error),
            Err(error) => batch.skipped.push(format!("{}: {error}", item.origin)),
        }
    }
    Ok(batch)
}

/// What `check` knows of DMARC events.
pub const VOCABULARY: Vocabulary = Vocabulary {
    provider: "DMARC",
    prefix: "dmarc.",
    kinds: &["dmarc.record", "dmarc.report"],
    labels: &[
        "disposition",
        "dkim",
        "dmarc",
        "domain",
        "network",
        "org",
        "reason",
        "source",
        "spf",
    ],
};
