//! The mailbox way in: aggregate reports arrive by email (the `rua=mailto:` address),
//! so a source may poll an IMAP folder for them instead of being posted to.
//!
//! Each poll logs in, takes the messages in `folder`, and submits every report
//! attachment through the source's intake exactly as if it had been posted (same parse,
//! same dedup, same journal). A message with at least one attachment accepted moves to
//! `processed_folder`; one whose attachments were all refused (or that has none, such
//! as a failure report) is flagged and moves to `failed_folder`, so it is looked at by
//! a person rather than retried forever. When the journal cannot take a body the
//! message stays where it is for the next poll. Reading the message's parts is
//! `unpack.rs`'s job.
//!
//! This is the one outbound connection outside `notify/`: fetching is how this source
//! receives, the way a listener accepts for the others.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_imap::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::unpack;
use crate::sources::intake::{Intake, IntakeError};

/// How a poll connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// TLS from the first byte (IMAPS, port 993).
    Implicit,
    /// Plain IMAP upgraded with `STARTTLS` before logging in (port 143).
    StartTls,
    /// No TLS at all: for a server on the same host or in tests.
    None,
}

/// A configured mailbox.
#[derive(Clone)]
pub struct Mailbox {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub username: String,
    pub password: String,
    pub folder: String,
    pub processed_folder: String,
    pub failed_folder: String,
    pub poll_interval: Duration,
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

/// Messages handled per poll at most, so that one poll of a full mailbox ends and the
/// next one resumes where it stopped.
const MAX_MESSAGES_PER_POLL: usize = 100;

/// Messages larger than this are not fetched; they move to the failed folder.
const MAX_MESSAGE_BYTES: u32 = 64 * 1024 * 1024;

/// Longest a poll may take before it is abandoned and tried again.
const POLL_TIMEOUT: Duration = Duration::from_secs(600);

/// Longest the TCP and TLS handshakes may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls forever; a failed poll is logged and the next one tries again.
pub async fn run(mailbox: Arc<Mailbox>, intake: Intake) {
    let source = intake.source_id().clone();
    loop {
        match tokio::time::timeout(POLL_TIMEOUT, poll(&mailbox, &intake)).await {
            Ok(Ok(summary)) if summary.seen > 0 => tracing::debug!(
                source = %source,
                processed = summary.processed,
                failed = summary.failed,
                left = summary.left,
                "mailbox polled",
            ),
            Ok(Ok(_)) => {}
            Ok(Err(PollError::Login(error))) => tracing::error!(
                source = %source,
                host = %mailbox.host,
                error = %error,
                "mailbox login refused; reports are not being read",
            ),
            Ok(Err(PollError::Imap(error))) => tracing::warn!(
                source = %source,
                host = %mailbox.host,
                error = %error,
                "mailbox poll failed; will retry",
            ),
            Err(_) => tracing::warn!(
                source = %source,
                host = %mailbox.host,
                "mailbox poll timed out; will retry",
            ),
        }
        tokio::time::sleep(mailbox.poll_interval).await;
    }
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub seen: usize,
    pub processed: usize,
    pub failed: usize,
    /// Left in the folder for the next poll (the journal was busy).
    pub left: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("login failed: {0}")]
    Login(String),
    #[error("{0}")]
    Imap(String),
}

impl From<async_imap::error::Error> for PollError {
    fn from(error: async_imap::error::Error) -> Self {
        PollError::Imap(error.to_string())
    }
}

impl From<std::io::Error> for PollError {
    fn from(error: std::io::Error) -> Self {
        PollError::Imap(error.to_string())
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Processed,
    Failed(Vec<String>),
    Retry,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Io for T {}

/// Logs in, handles up to [`MAX_MESSAGES_PER_POLL`] messages of the folder, logs out.
pub async fn poll(mailbox: &Mailbox, intake: &Intake) -> Result<Summary, PollError> {
    let client = connect(mailbox).await?;
    let mut session = client
        .login(&mailbox.username, &mailbox.password)
        .await
        .map_err(|(error, _)| PollError::Login(error.to_string()))?;
    for folder in [&mailbox.processed_folder, &mailbox.failed_folder] {
        // Fails when the folder exists, which is the usual case.
        let _ = session.create(folder).await;
    }
    session.select(&mailbox.folder).await?;
    let can_move = session.capabilities().await?.has_str("MOVE");

    let mut sizes = Vec::new();
    {
        let mut fetches = session.uid_fetch("1:*", "(UID RFC822.SIZE)").await?;
        while let Some(fetch) = fetches.next().await {
            let fetch = fetch?;
            if let Some(uid) = fetch.uid {
                sizes.push((uid, fetch.size.unwrap_or(0)));
            }
        }
    }
    sizes.sort_unstable();
    sizes.truncate(MAX_MESSAGES_PER_POLL);

    let mut summary = Summary::default();
    for (uid, size) in sizes {
        summary.seen += 1;
        let outcome = if size > MAX_MESSAGE_BYTES {
            Outcome::Failed(vec![format!(
                "message of {size} bytes is larger than the {MAX_MESSAGE_BYTES} read"
            )])
        } else {
            let mut body = None;
            {
                let mut fetches = session.uid_fetch(uid.to_string(), "BODY.PEEK[]").await?;
                while let Some(fetch) = fetches.next().await {
                    let fetch = fetch?;
                    if body.is_none() {
                        body = fetch.body().map(<[u8]>::to_vec);
                    }
                }
            }
            match body {
                Some(body) => handle(&body, intake).await,
                // Gone since the listing (another client moved it).
                None => continue,
            }
        };
        let target = match &outcome {
            Outcome::Processed => {
                summary.processed += 1;
                &mailbox.processed_folder
            }
            Outcome::Failed(reasons) => {
                summary.failed += 1;
                tracing::warn!(
                    source = %intake.source_id(),
                    uid,
                    reasons = %reasons.join("; "),
                    folder = %mailbox.failed_folder,
                    "no report in the message was accepted; moved aside",
                );
                let mut stored = session
                    .uid_store(uid.to_string(), "+FLAGS (\\Flagged)")
                    .await?;
                while let Some(response) = stored.next().await {
                    response?;
                }
                &mailbox.failed_folder
            }
            Outcome::Retry => {
                summary.left += 1;
                continue;
            }
        };
        move_message(&mut session, uid, target, can_move).await?;
        while session.unsolicited_responses.try_recv().is_ok() {}
    }
    let _ = session.logout().await;
    Ok(summary)
}

async fn move_message<T: Io>(
    session: &mut async_imap::Session<T>,
    uid: u32,
    folder: &str,
    can_move: bool,
) -> Result<(), PollError> {
    if can_move {
        session.uid_mv(uid.to_string(), folder).await?;
        return Ok(());
    }
    session.uid_copy(uid.to_string(), folder).await?;
    {
        let mut stored = session
            .uid_store(uid.to_string(), "+FLAGS (\\Deleted)")
            .await?;
        while let Some(response) = stored.next().await {
            response?;
        }
    }
    let expunged = session.uid_expunge(uid.to_string()).await?;
    futures_util::pin_mut!(expunged);
    while let Some(response) = expunged.next().await {
        response?;
    }
    Ok(())
}

/// Submits each report attachment of one message.
async fn handle(message: &[u8], intake: &Intake) -> Outcome {
    let parts = match unpack::message_parts(message) {
        Ok(parts) => parts,
        Err(error) => return Outcome::Failed(vec![error.to_string()]),
    };
    let mut accepted = false;
    let mut retry = false;
    let mut refused = Vec::new();
    for part in parts {
        let content = match part.content {
            Ok(content) => content,
            Err(error) => {
                refused.push(format!("{}: {error}", part.name));
                continue;
            }
        };
        match intake.submit(Bytes::from(content)).await {
            Ok(answer) => {
                accepted = true;
                tracing::debug!(
                    source = %intake.source_id(),
                    attachment = %part.name,
                    accepted = answer.accepted,
                    duplicates = answer.duplicates,
                    skipped = answer.skipped.len(),
                    warnings = %answer.warnings.join("; "),
                    "report attachment journaled",
                );
            }
            Err(IntakeError::Refused(error)) => refused.push(format!("{}: {error}", part.name)),
            Err(IntakeError::Unavailable(_)) => retry = true,
        }
    }
    if retry {
        Outcome::Retry
    } else if accepted {
        Outcome::Processed
    } else {
        Outcome::Failed(refused)
    }
}

async fn connect(mailbox: &Mailbox) -> Result<Client<Box<dyn Io>>, PollError> {
    let address = (mailbox.host.as_str(), mailbox.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| PollError::Imap(format!("connecting to {} timed out", mailbox.host)))??;
    match mailbox.tls {
        Tls::None => {
            let mut client = Client::new(Box::new(tcp) as Box<dyn Io>);
            greeting(&mut client).await?;
            Ok(client)
        }
        Tls::Implicit => {
            let tls = tls_connect(&mailbox.host, tcp).await?;
            let mut client = Client::new(Box::new(tls) as Box<dyn Io>);
            greeting(&mut client).await?;
            Ok(client)
        }
        Tls::StartTls => {
            let mut client = Client::new(tcp);
            greeting(&mut client).await?;
            client.run_command_and_check_ok("STARTTLS", None).await?;
            let tls = tls_connect(&mailbox.host, client.into_inner()).await?;
            // No greeting after STARTTLS: the server waits for the next command.
            Ok(Client::new(Box::new(tls) as Box<dyn Io>))
        }
    }
}

async fn greeting<T: Io>(client: &mut Client<T>) -> Result<(), PollError> {
    match client.read_response().await? {
        Some(_) => Ok(()),
        None => Err(PollError::Imap(
            "the server closed the connection before greeting".into(),
        )),
    }
}

async fn tls_connect(
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, PollError> {
    // FIXME: only the public web roots are trusted, so an IMAP server with a private CA
    // cannot be used with TLS; a `ca_file` setting would lift it.
    use hyper_rustls::ConfigBuilderExt as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PollError::Imap(e.to_string()))?
        .with_webpki_roots()
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| PollError::Imap(format!("{host:?} is not a host name for TLS")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| PollError::Imap(format!("TLS handshake with {host} timed out")))?
        .map_err(|e| PollError::Imap(format!("TLS handshake with {host} failed: {e}")))
}
