//! The config file as written: serde structs that reject unknown keys, one doc comment
//! per field. Nothing here is checked beyond its type; `config/mod.rs` turns this into
//! the runtime config and says what is wrong.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub journal: RawJournal,
    #[serde(default)]
    pub templates: RawTemplates,
    #[serde(default)]
    pub links: RawLinks,
    #[serde(default)]
    pub api: RawApi,
    /// Source id to source; the id is the last segment of `POST /ingest/{id}`.
    #[serde(default)]
    pub sources: BTreeMap<String, RawSource>,
    /// Contact name to contact.
    #[serde(default)]
    pub contacts: BTreeMap<String, RawContact>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Bearer token the REST API (`/api/v1/...`) requires; unset leaves it open.
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on, `host:port`.
    pub listen: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: Option<u64>,
    /// How often firing alerts are re-checked for resolution and repeats.
    pub eval_interval: Option<String>,
    /// Longest a request may take, body upload included, before it is answered 408.
    pub request_timeout: Option<String>,
    /// A client must send its request headers within this time, or is disconnected.
    pub header_read_timeout: Option<String>,
    /// Connections open at once; more clients wait until one closes.
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// SQLite database file; created on first start. Relative to the config file.
    pub path: Option<String>,
    /// How long an event id is remembered to drop redeliveries.
    pub dedup_horizon: Option<String>,
    /// How long accepted request bodies are kept (at least the longest rule lookback).
    pub journal_retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournal {
    /// Batches waiting for the journal before ingest answers 503.
    pub queue_batches: Option<usize>,
    /// Most events written in one group commit.
    pub max_group_events: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplates {
    /// Directory of `*.hbs` files that add to or override the built-in templates.
    pub dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLinks {
    /// Trace page URL with `{trace_id}` (and optionally `{span_id}`) placeholders.
    pub trace_url: Option<String>,
}

/// A source's table: its `type`, and settings that the source's own module checks.
#[derive(Debug, Deserialize)]
pub struct RawSource {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub settings: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawContact {
    Log {
        /// Template name (default `log`).
        template: Option<String>,
    },
    Slack {
        /// Bot token (`xoxb-…`) for the Web API; empty disables the contact.
        token: Option<String>,
        /// Channel name or id for the Web API.
        channel: Option<String>,
        /// Incoming webhook URL, instead of a token and channel.
        webhook_url: Option<String>,
        /// Web API base URL (default `https://slack.com/api`).
        api_url: Option<String>,
        /// Template name (default `slack`).
        template: Option<String>,
        /// `update` the firing message on resolution, or reply in its `thread`.
        resolve: Option<String>,
        /// Longer descriptions are cut with `…` before rendering.
        max_description_chars: Option<usize>,
        /// How long a notification may keep failing before it is a dead letter.
        delivery_deadline: Option<String>,
    },
}

/// One label value or several accepted values.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatcher {
    /// Event kinds, any of (`sendgrid.dropped`).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Source ids, any of.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Label to required value (or any of a list).
    #[serde(default)]
    pub labels: BTreeMap<String, OneOrMany>,
    /// Label to a regular expression its value must match.
    #[serde(default)]
    pub label_patterns: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique name; part of every alert's identity.
    pub name: String,
    /// `each`, `threshold`, `ratio`, `jump`, `nearing_limit` or `absence`.
    pub kind: String,
    /// Which events count.
    #[serde(rename = "match", default)]
    pub matcher: RawMatcher,
    /// Labels that split alerts into groups.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Window the rule looks at (`each`: how long until the alert resolves).
    pub window: Option<String>,
    /// `threshold`: weight in the window that fires.
    pub threshold: Option<f64>,
    /// `ratio`: which events make the denominator.
    pub base: Option<RawMatcher>,
    /// `ratio`: the subset of `group_by` the denominator is grouped by.
    pub base_group_by: Option<Vec<String>>,
    /// `ratio`: fraction that fires (0.05 = 5%).
    pub min_ratio: Option<f64>,
    /// `ratio`: denominator needed before the ratio means anything.
    pub min_base: Option<f64>,
    /// `jump`: history the window is compared with.
    pub baseline: Option<String>,
    /// `jump`: how many times the baseline rate fires.
    pub factor: Option<f64>,
    /// `jump`: weight in the window needed at all.
    pub min_count: Option<f64>,
    /// `nearing_limit`: fraction of the limit that fires (0.85 = 85%).
    pub fraction: Option<f64>,
    /// `nearing_limit`: the limit, for events that do not carry their own.
    pub limit: Option<f64>,
    /// `nearing_limit`: also fire when the trend over the window reaches the limit
    /// within this long.
    pub trend_within: Option<String>,
    /// `info`, `warning` or `critical`.
    pub severity: Option<String>,
    /// Handlebars template for the one-line summary.
    pub summary: Option<String>,
    /// Handlebars template for a longer description.
    pub description: Option<String>,
    /// Fraction of the firing bar below which a firing alert resolves.
    pub resolve_ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Alert label to value (or any of a list); `rule` and `severity` are labels.
    #[serde(rename = "match", default)]
    pub matchers: BTreeMap<String, OneOrMany>,
    /// Contacts to notify.
    pub contacts: Vec<String>,
    /// How often a still-firing alert is repeated.
    pub repeat_interval: Option<String>,
    /// Whether resolutions are sent.
    pub send_resolved: Option<bool>,
    /// Keep matching later routes too.
    #[serde(rename = "continue")]
    pub continue_matching: Option<bool>,
}
