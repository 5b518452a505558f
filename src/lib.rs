//! backchannel listens where providers report failures after the fact (webhooks, report
//! addresses), decides what matters with rules, and tells the people and programs that
//! can act.
//!
//! The modules follow the pipeline, in the order an event travels:
//!
//! - [`sources`]: verify a provider's request over its raw bytes and parse it into
//!   common [`event::Event`]s with dedup keys; one module per provider behind the
//!   `Backchannel` trait. The only outbound calls outside `notify` are the ones a
//!   provider's protocol requires: SNS signing certificates and subscription
//!   confirmations, and the DMARC mailbox poller's IMAP connection.
//! - [`http`]: the axum surface; `POST /ingest/{source}` hands parsed batches to the
//!   journal and answers only once they are durable; `GET /api/v1/events` reads them
//!   back.
//! - [`store`]: SQLite. The journal (`store::journal`) group-commits batches and dedup
//!   keys; the rest keeps alert state, the outbox and chat message references. The only
//!   module with SQL.
//! - [`rules`]: windows per rule and group, and the conditions (`each`, `threshold`,
//!   `ratio`, `jump`, `nearing_limit`, `absence`). Pure computation on a caller-given
//!   clock.
//! - [`alerts`]: the alert state machine (fire, repeat, resolve) and routing; its runner
//!   task persists each decision with its outbox rows in one transaction.
//! - [`notify`]: contacts (log, Slack) and the outbox worker with retries, rate limits and
//!   dead letters. The only module that sends notifications.
//! - [`templates`]: handlebars registries, one per output context, so escaping follows
//!   the channel.
//! - [`config`]: the TOML file, checked into the runtime configuration.
//! - [`server`] wires it all for `serve`; [`replay`] runs the same rules over saved
//!   payloads on a simulated clock.

pub mod alerts;
pub mod clock;
pub mod config;
pub mod event;
pub mod http;
pub mod notify;
pub mod replay;
pub mod rules;
pub mod server;
pub mod sources;
pub mod store;
pub mod templates;

/// Makes ring the process's TLS crypto provider. Safe to call more than once; needed
/// because a dependency may compile in a second provider, and rustls then refuses to
/// choose on its own.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
