//! Configuration: reads the TOML file, resolves `${ENV_VAR}` secrets, and checks
//! everything (durations, references, templates, keys) into the runtime [`Config`].
//!
//! Every problem found is reported, not only the first, each naming the file, the key
//! path and what was expected. `serve` refuses to start on any of them.

pub mod raw;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raw::{RawConfig, RawContact, RawMatcher, RawRule, RawSource};

use crate::alerts::{Notification, Route};
use crate::notify::log::LogContact;
use crate::notify::slack::{ResolveMode, SlackContact, Target};
use crate::notify::{Contact, ContactKind};
use crate::rules::{Matcher, Rule, RuleKind, Severity};
use crate::sources::Source;
use crate::templates::Templates;

/// The checked configuration `serve`, `replay` and the benchmark run with.
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub eval_interval_ms: i64,
    pub request_timeout_ms: i64,
    pub header_read_timeout_ms: i64,
    pub max_connections: usize,
    pub store_path: PathBuf,
    pub dedup_horizon_ms: i64,
    pub journal_retention_ms: i64,
    pub queue_batches: usize,
    pub max_group_events: usize,
    pub sources: HashMap<String, Source>,
    pub contacts: Vec<Arc<Contact>>,
    pub rules: Vec<Arc<Rule>>,
    pub routes: Arc<[Route]>,
    pub templates: Arc<Templates>,
    pub trace_url: Option<String>,
    /// Bearer token for `/api/v1/...`; `None` leaves the API open (a warning says so).
    pub api_token: Option<String>,
    /// Things that work but that an operator should know (unsigned sources, disabled
    /// contacts); printed by `check` and logged by `serve`.
    pub warnings: Vec<String>,
}

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .issues.iter().map(|i| format!("{}: {i}", .file)).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub file: String,
    pub issues: Vec<String>,
}

/// Collects issues as `key: message` while checking.
#[derive(Default)]
struct Issues(Vec<String>);

impl Issues {
    fn add(&mut self, key: impl std::fmt::Display, message: impl std::fmt::Display) {
        self.0.push(format!("{key}: {message}"));
    }
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let fail = |message: String| ConfigError {
            file: file.clone(),
            issues: vec![message],
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let deserializer =
            toml::Deserializer::parse(&text).map_err(|e| fail(toml_error(&text, &e)))?;
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            fail(format!("{key}: {}", toml_error(&text, &inner)))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::check(raw, path, base).map_err(|issues| ConfigError { file, issues })
    }

    fn check(raw: RawConfig, path: &Path, base: &Path) -> Result<Self, Vec<String>> {
        crate::install_crypto_provider();
        let mut issues = Issues::default();
        let mut warnings = Vec::new();

        let listen_text = env_value(
            raw.server.listen.as_deref().unwrap_or("127.0.0.1:9477"),
            "server.listen",
            &mut issues,
        );
        let listen = listen_text.parse().unwrap_or_else(|_| {
            issues.add(
                "server.listen",
                format!("expected host:port such as \"127.0.0.1:9477\", found {listen_text:?}"),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let max_body_bytes = raw.server.max_body_bytes.unwrap_or(16 * 1024 * 1024) as usize;
        if max_body_bytes < 1024 {
            issues.add(
                "server.max_body_bytes",
                format!("expected at least 1024, found {max_body_bytes}"),
            );
        }
        let eval_interval_ms = duration(
            raw.server.eval_interval.as_deref(),
            "server.eval_interval",
            1_000,
            &mut issues,
        );
        let request_timeout_ms = duration(
            raw.server.request_timeout.as_deref(),
            "server.request_timeout",
            30_000,
            &mut issues,
        );
        let header_read_timeout_ms = duration(
            raw.server.header_read_timeout.as_deref(),
            "server.header_read_timeout",
            10_000,
            &mut issues,
        );
        let max_connections = raw.server.max_connections.unwrap_or(1024);
        if max_connections == 0 {
            issues.add("server.max_connections", "expected at least 1, found 0");
        }
        let store_path = base.join(env_value(
            raw.store.path.as_deref().unwrap_or("backchannel.db"),
            "store.path",
            &mut issues,
        ));
        let dedup_horizon_ms = duration(
            raw.store.dedup_horizon.as_deref(),
            "store.dedup_horizon",
            72 * 3_600_000,
            &mut issues,
        );
        let journal_retention_ms = duration(
            raw.store.journal_retention.as_deref(),
            "store.journal_retention",
            48 * 3_600_000,
            &mut issues,
        );
        let queue_batches = raw.journal.queue_batches.unwrap_or(256);
        let max_group_events = raw.journal.max_group_events.unwrap_or(50_000);
        if queue_batches == 0 {
            issues.add("journal.queue_batches", "expected at least 1, found 0");
        }

        let template_dir = raw.templates.dir.as_deref().map(|d| base.join(d));
        let mut templates = match Templates::load(template_dir.as_deref()) {
            Ok(t) => t,
            Err(error) => {
                issues.add("templates.dir", error);
                Templates::load(None).expect("built-in templates compile")
            }
        };
        let api_token = raw
            .api
            .token
            .as_deref()
            .map(|t| env_value(t, "api.token", &mut issues).trim().to_string())
            .filter(|t| !t.is_empty());
        if api_token.is_none() {
            warnings.push(
                "api.token: not set, so the REST API (/api/v1) answers anyone who can reach it"
                    .to_string(),
            );
        }
        let trace_url = raw
            .links
            .trace_url
            .as_deref()
            .map(|u| env_value(u, "links.trace_url", &mut issues));
        if let Some(url) = &trace_url
            && !url.contains("{trace_id}")
        {
            issues.add(
                "links.trace_url",
                format!("expected a URL containing {{trace_id}}, found {url:?}"),
            );
        }

        let sources = check_sources(raw.sources, base, &mut issues, &mut warnings);
        let (contacts, disabled) =
            check_contacts(raw.contacts, &templates, &mut issues, &mut warnings);
        let rules = check_rules(
            raw.rules,
            &sources,
            &mut templates,
            &mut issues,
            &mut warnings,
        );
        let mut used = HashSet::new();
        let mut routes = Vec::new();
        for (index, route) in raw.routes.into_iter().enumerate() {
            let key = format!("routes[{index}]");
            let no_contacts = route.contacts.is_empty();
            let mut route_contacts = Vec::new();
            for name in route.contacts {
                if disabled.contains(&name) {
                    used.insert(name);
                } else if contacts.iter().any(|c| c.name == name) {
                    used.insert(name.clone());
                    route_contacts.push(name);
                } else {
                    let mut known: Vec<&String> =
                        contacts.iter().map(|c| &c.name).chain(&disabled).collect();
                    known.sort();
                    issues.add(
                        format!("{key}.contacts"),
                        format!(
                            "no contact named {name:?} (contacts: {})",
                            names(known.into_iter())
                        ),
                    );
                }
            }
            let matchers: Vec<(String, Vec<String>)> = route
                .matchers
                .into_iter()
                .map(|(k, v)| (k, v.into_vec()))
                .collect();
            check_route_matchers(&key, &matchers, &rules, &mut issues, &mut warnings);
            if no_contacts {
                warnings.push(format!(
                    "{key}.contacts: empty, so the alerts this route matches notify nobody"
                ));
            }
            routes.push(Route {
                matchers,
                contacts: route_contacts,
                repeat_interval_ms: duration(
                    route.repeat_interval.as_deref(),
                    &format!("{key}.repeat_interval"),
                    4 * 3_600_000,
                    &mut issues,
                ),
                send_resolved: route.send_resolved.unwrap_or(true),
                continue_matching: route.continue_matching.unwrap_or(false),
            });
        }
        for contact in &contacts {
            if !used.contains(&contact.name) {
                warnings.push(format!(
                    "contacts.{}: no route sends to this contact",
                    contact.name
                ));
            }
        }
        if sources.is_empty() {
            warnings.push("sources: none configured, so nothing can be ingested".into());
        }
        if !rules.is_empty() && routes.is_empty() {
            warnings.push("routes: none configured, so alerts notify nobody".into());
        }
        let lookback = rules.iter().map(|r| r.lookback_ms()).max().unwrap_or(0);
        if journal_retention_ms < lookback {
            issues.add(
                "store.journal_retention",
                format!(
                    "expected at least the longest rule lookback ({}), found {}",
                    crate::rules::engine::duration_text(lookback),
                    crate::rules::engine::duration_text(journal_retention_ms)
                ),
            );
        }

        if !issues.0.is_empty() {
            return Err(issues.0);
        }
        Ok(Self {
            path: path.to_path_buf(),
            listen,
            max_body_bytes,
            eval_interval_ms,
            request_timeout_ms,
            header_read_timeout_ms,
            max_connections,
            store_path,
            dedup_horizon_ms,
            journal_retention_ms,
            queue_batches,
            max_group_events,
            sources,
            contacts,
            rules,
            routes: Arc::from(routes),
            templates: Arc::new(templates),
            trace_url,
            api_token,
            warnings,
        })
    }
}

/// Values a route can never see are refused: a severity that does not exist, or a rule
/// that is not configured, would make the route silently match nothing.
fn check_route_matchers(
    key: &str,
    matchers: &[(String, Vec<String>)],
    rules: &[Arc<Rule>],
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) {
    for (label, values) in matchers {
        let grouped = rules.iter().any(|r| r.group_by.contains(label));
        if !["rule", "severity"].contains(&label.as_str()) && !grouped {
            warnings.push(format!(
                "{key}.match.{label}: no rule groups by {label:?}, so alerts never carry it \
                 and this route never matches"
            ));
        }
        for value in values {
            match label.as_str() {
                "severity" if !["info", "warning", "critical"].contains(&value.as_str()) => {
                    issues.add(
                        format!("{key}.match.severity"),
                        format!("expected \"info\", \"warning\" or \"critical\", found {value:?}"),
                    );
                }
                "rule" if !rules.iter().any(|r| r.name == *value) => {
                    issues.add(
                        format!("{key}.match.rule"),
                        format!(
                            "no rule named {value:?} (rules: {})",
                            names(rules.iter().map(|r| &r.name))
                        ),
                    );
                }
                _ => {}
            }
        }
    }
}

fn names<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = items.map(String::as_str).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().to_string();
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// Resolves `${VAR}` and `${VAR:-default}` anywhere in `value`.
fn env_value(value: &str, key: &str, issues: &mut Issues) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            issues.add(
                key,
                "expected ${NAME} or ${NAME:-default}, found an unclosed ${",
            );
            return out;
        };
        let inner = &rest[start + 2..start + end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match (std::env::var(name), default) {
            (Ok(found), _) => out.push_str(&found),
            (Err(_), Some(default)) => out.push_str(default),
            (Err(_), None) => issues.add(
                key,
                format!(
                    "environment variable {name} is not set \
                     (write ${{{name}:-}} to make it optional)"
                ),
            ),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// Longest duration accepted anywhere: sums of window lengths must not overflow.
const MAX_DURATION_MS: u128 = 100 * 365 * 24 * 3_600_000;

fn duration(text: Option<&str>, key: &str, default_ms: i64, issues: &mut Issues) -> i64 {
    let Some(text) = text else { return default_ms };
    // Everything downstream counts in whole milliseconds: "500us" would be zero there.
    match humantime::parse_duration(text) {
        Ok(d) if d.as_millis() >= 1 && d.as_millis() <= MAX_DURATION_MS => d.as_millis() as i64,
        Ok(d) if d.as_millis() >= 1 => {
            issues.add(key, format!("expected at most 100 years, found {text:?}"));
            default_ms
        }
        Ok(d) if !d.is_zero() => {
            issues.add(key, format!("expected at least 1ms, found {text:?}"));
            default_ms
        }
        _ => {
            issues.add(
                key,
                format!(
                    "expected a duration above zero such as \"10m\" or \"24h\", found {text:?}"
                ),
            );
            default_ms
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_sources(
    raw: BTreeMap<String, RawSource>,
    base: &Path,
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) -> HashMap<String, Source> {
    let mut sources = HashMap::new();
    for (id, source) in raw {
        let key = format!("sources.{id}");
        if !valid_id(&id) {
            issues.add(
                &key,
                "expected an id of letters, digits, '-' and '_' (it becomes part of a URL)",
            );
        }
        let mut settings = SourceSettings {
            key,
            table: Some(source.settings),
            base,
            issues,
            warnings,
        };
        if let Some(backchannel) = crate::sources::configure(&source.kind, &mut settings) {
            sources.insert(
                id.clone(),
                Source {
                    id: Arc::from(id.as_str()),
                    backchannel,
                },
            );
        }
    }
    sources
}

/// What a source module gets to read its own table with: errors and warnings it
/// reports are prefixed with the table's key, as every other config issue is.
pub struct SourceSettings<'a> {
    key: String,
    table: Option<toml::Table>,
    base: &'a Path,
    issues: &'a mut Issues,
    warnings: &'a mut Vec<String>,
}

impl SourceSettings<'_> {
    /// Settings for a test or a tool that checks one source outside a config file.
    pub fn check_alone<T>(
        key: &str,
        table: toml::Table,
        f: impl FnOnce(&mut SourceSettings<'_>) -> Option<T>,
    ) -> Result<T, Vec<String>> {
        let mut issues = Issues::default();
        let mut warnings = Vec::new();
        let mut settings = SourceSettings {
            key: key.to_string(),
            table: Some(table),
            base: Path::new("."),
            issues: &mut issues,
            warnings: &mut warnings,
        };
        let result = f(&mut settings);
        match result {
            Some(value) if issues.0.is_empty() => Ok(value),
            _ => Err(issues.0),
        }
    }

    /// The table as the module's settings type, which should deny unknown fields.
    /// Taken once; a second call reports nothing and returns `None`.
    pub fn parse<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        let table = self.table.take()?;
        match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table)) {
            Ok(value) => Some(value),
            Err(error) => {
                let path = error.path().to_string();
                let key = if path == "." {
                    self.key.clone()
                } else {
                    format!("{}.{path}", self.key)
                };
                self.issues.add(key, error.into_inner());
                None
            }
        }
    }

    /// Reports an issue with `field` of this source.
    pub fn error(&mut self, field: &str, message: impl std::fmt::Display) {
        self.issues.add(format!("{}.{field}", self.key), message);
    }

    /// Records a warning about this source.
    pub fn warn(&mut self, message: impl std::fmt::Display) {
        self.warnings.push(format!("{}: {message}", self.key));
    }

    /// A value with `${VAR}` resolved, trimmed; `None` when unset or empty.
    pub fn secret(&mut self, field: &str, value: Option<String>) -> Option<String> {
        let key = format!("{}.{field}", self.key);
        let value = env_value(&value?, &key, self.issues);
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_string())
    }

    /// A duration setting in milliseconds, `default_ms` when unset.
    pub fn duration(&mut self, field: &str, text: Option<&str>, default_ms: i64) -> i64 {
        duration(
            text,
            &format!("{}.{field}", self.key),
            default_ms,
            self.issues,
        )
    }

    /// A path setting, relative to the config file's directory.
    pub fn path(&mut self, field: &str, text: &str) -> PathBuf {
        let key = format!("{}.{field}", self.key);
        self.base.join(env_value(text, &key, self.issues))
    }

    /// The key of this source's table, such as `sources.csp`.
    pub fn key(&self) -> &str {
        &self.key
    }
}

fn check_contacts(
    raw: BTreeMap<String, RawContact>,
    templates: &Templates,
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) -> (Vec<Arc<Contact>>, HashSet<String>) {
    let mut contacts = Vec::new();
    let mut disabled = HashSet::new();
    for (name, contact) in raw {
        let key = format!("contacts.{name}");
        let mut template_of = |template: Option<String>, default: &str| {
            let template = template.unwrap_or_else(|| default.to_string());
            if !templates.has(&template) {
                issues.add(
                    format!("{key}.template"),
                    format!("no template named {template:?}"),
                );
            }
            template
        };
        let (kind, deadline) = match contact {
            RawContact::Log { template } => (
                ContactKind::Log(LogContact {
                    template: template_of(template, "log"),
                }),
                None,
            ),
            RawContact::Slack {
                token,
                channel,
                webhook_url,
                api_url,
                template,
                resolve,
                max_description_chars,
                delivery_deadline,
            } => {
                let template = template_of(template, "slack");
                let max_description = max_description_chars.unwrap_or(3000);
                // Checked whether or not the contact is enabled: setting the token later
                // must not be what reveals a broken template.
                let failure = Notification::samples().iter().find_map(|sample| {
                    let rendered = crate::notify::slack::render_message(
                        &template,
                        max_description,
                        &name,
                        templates,
                        sample,
                    );
                    let state = match (sample.status, sample.repeat) {
                        (crate::alerts::Status::Resolved, _) => "resolved",
                        (_, true) => "repeating",
                        _ => "firing",
                    };
                    rendered.err().map(|e| format!("for a {state} alert, {e}"))
                });
                if templates.has(&template)
                    && let Some(e) = failure
                {
                    issues.add(
                        format!("{key}.template"),
                        format!(
                            "expected a template that renders a Slack message; {:?} ({}) \
                             does not: {e}",
                            template,
                            templates.origin(&template)
                        ),
                    );
                }
                let token = token
                    .map(|t| env_value(&t, &format!("{key}.token"), issues))
                    .filter(|t| !t.trim().is_empty());
                let webhook_url = webhook_url
                    .map(|u| env_value(&u, &format!("{key}.webhook_url"), issues))
                    .filter(|u| !u.trim().is_empty());
                let api_url = env_value(
                    api_url.as_deref().unwrap_or("https://slack.com/api"),
                    &format!("{key}.api_url"),
                    issues,
                );
                if url::Url::parse(&api_url).is_err() {
                    issues.add(
                        format!("{key}.api_url"),
                        format!("expected a URL, found {api_url:?}"),
                    );
                }
                let resolve = match resolve.as_deref().unwrap_or("update") {
                    "update" => ResolveMode::Update,
                    "thread" => ResolveMode::Thread,
                    other => {
                        issues.add(
                            format!("{key}.resolve"),
                            format!("expected \"update\" or \"thread\", found {other:?}"),
                        );
                        ResolveMode::Update
                    }
                };
                let target = match (token, webhook_url) {
                    (Some(_), Some(_)) => {
                        issues.add(
                            &key,
                            "expected either token (with channel) or webhook_url, found both",
                        );
                        continue;
                    }
                    (None, None) => {
                        warnings.push(format!(
                            "{key}: disabled, since neither token nor webhook_url is set"
                        ));
                        disabled.insert(name);
                        continue;
                    }
                    (Some(token), None) => {
                        let Some(channel) = channel
                            .map(|c| env_value(&c, &format!("{key}.channel"), issues))
                            .filter(|c| !c.is_empty())
                        else {
                            issues.add(
                                format!("{key}.channel"),
                                "expected a channel name or id to go with the token",
                            );
                            continue;
                        };
                        Target::Api {
                            token: slack_morphism::prelude::SlackApiToken::new(token.into()),
                            channel,
                            resolve,
                        }
                    }
                    (None, Some(url)) => match url::Url::parse(&url) {
                        Ok(url) => Target::Webhook { url },
                        Err(_) => {
                            issues.add(format!("{key}.webhook_url"), "expected an https URL");
                            continue;
                        }
                    },
                };
                let contact = SlackContact::new(&api_url, target, template, max_description);
                (ContactKind::Slack(Box::new(contact)), delivery_deadline)
            }
        };
        let deadline_ms = duration(
            deadline.as_deref(),
            &format!("{key}.delivery_deadline"),
            6 * 3_600_000,
            issues,
        );
        contacts.push(Arc::new(Contact {
            name,
            kind,
            deadline_ms,
        }));
    }
    (contacts, disabled)
}

fn check_matcher(
    raw: RawMatcher,
    key: &str,
    sources: &HashMap<String, Source>,
    issues: &mut Issues,
) -> Matcher {
    for source in &raw.sources {
        if !sources.contains_key(source) {
            issues.add(
                format!("{key}.sources"),
                format!("no source named {source:?}"),
            );
        }
    }
    for kind in &raw.kinds {
        if !kind.contains('.') {
            issues.add(
                format!("{key}.kinds"),
                format!("expected a kind such as \"sendgrid.dropped\", found {kind:?}"),
            );
        }
    }
    let label_patterns = raw
        .label_patterns
        .into_iter()
        .filter_map(|(label, pattern)| match regex_lite::Regex::new(&pattern) {
            Ok(regex) => Some((label, regex)),
            Err(e) => {
                issues.add(
                    format!("{key}.label_patterns.{label}"),
                    format!("expected a regular expression: {e}"),
                );
                None
            }
        })
        .collect();
    Matcher {
        kinds: raw.kinds,
        sources: raw.sources,
        labels: raw
            .labels
            .into_iter()
            .map(|(k, v)| (k, v.into_vec()))
            .collect(),
        label_patterns,
    }
}

/// Warns about kinds and labels a rule names that its sources' events never have:
/// such a rule is valid but would never fire, or would group everything together.
fn warn_unknown_names(
    key: &str,
    name: &str,
    matcher: &Matcher,
    group_by: &[String],
    warnings: &mut Vec<String>,
) {
    let Some(first) = matcher.kinds.first() else {
        return;
    };
    let Some(words) = crate::sources::VOCABULARIES
        .iter()
        .find(|v| first.starts_with(v.prefix))
    else {
        return;
    };
    if !matcher.kinds.iter().all(|k| k.starts_with(words.prefix)) {
        return;
    }
    for kind in matcher
        .kinds
        .iter()
        .filter(|k| !k.ends_with('*') && !words.kinds.contains(&k.as_str()))
    {
        warnings.push(format!(
            "{key} ({name}): match.kinds: {kind:?} is not a documented {} event type",
            words.provider
        ));
    }
    let named = group_by
        .iter()
        .chain(matcher.labels.iter().map(|(l, _)| l))
        .chain(matcher.label_patterns.iter().map(|(l, _)| l));
    for label in named.filter(|l| l.as_str() != "source" && !words.labels.contains(&l.as_str())) {
        warnings.push(format!(
            "{key} ({name}): {} events have no label {label:?} (they have {})",
            words.provider,
            words.labels.join(", ")
        ));
    }
}

/// Rule kinds, as `kind` names them.
const KNOWN_RULE_KINDS: &[&str] = &[
    "each",
    "threshold",
    "ratio",
    "jump",
    "nearing_limit",
    "absence",
];

fn check_rules(
    raw: Vec<RawRule>,
    sources: &HashMap<String, Source>,
    templates: &mut Templates,
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) -> Vec<Arc<Rule>> {
    let mut rules = Vec::new();
    let mut seen = HashSet::new();
    for (index, rule) in raw.into_iter().enumerate() {
        let key = format!("rules[{index}]");
        if rule.name.trim().is_empty() {
            issues.add(format!("{key}.name"), "expected a non-empty name");
        } else if !seen.insert(rule.name.clone()) {
            issues.add(
                format!("{key}.name"),
                format!("another rule is already named {:?}", rule.name),
            );
        }
        let matcher = check_matcher(rule.matcher, &format!("{key}.match"), sources, issues);
        warn_unknown_names(&key, &rule.name, &matcher, &rule.group_by, warnings);
        if matcher.kinds.is_empty() && matcher.sources.is_empty() {
            warnings.push(format!(
                "{key} ({}): match has neither kinds nor sources, so every event counts",
                rule.name
            ));
        }
        let severity = match rule.severity.as_deref().unwrap_or("warning") {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            other => {
                issues.add(
                    format!("{key}.severity"),
                    format!("expected \"info\", \"warning\" or \"critical\", found {other:?}"),
                );
                Severity::Warning
            }
        };
        let resolve_ratio = rule.resolve_ratio.unwrap_or(0.8);
        if !(resolve_ratio > 0.0 && resolve_ratio <= 1.0) {
            issues.add(
                format!("{key}.resolve_ratio"),
                format!("expected a fraction in (0, 1], found {resolve_ratio}"),
            );
        }
        let window =
            |issues: &mut Issues, default: Option<i64>| match (rule.window.as_deref(), default) {
                (None, None) => {
                    issues.add(
                        format!("{key}.window"),
                        format!("expected a duration for a {} rule", rule.kind),
                    );
                    60_000
                }
                (text, default) => {
                    duration(text, &format!("{key}.window"), default.unwrap_or(0), issues)
                }
            };
        let positive = |issues: &mut Issues, name: &str, value: Option<f64>| match value {
            Some(v) if v > 0.0 && v.is_finite() => v,
            Some(v) => {
                issues.add(
                    format!("{key}.{name}"),
                    format!("expected a positive number, found {v}"),
                );
                1.0
            }
            None => {
                issues.add(
                    format!("{key}.{name}"),
                    format!("expected a number for a {} rule", rule.kind),
                );
                1.0
            }
        };
        // Each setting that only some kinds take, with those kinds.
        let specific: [(&str, bool, &[&str]); 8] = [
            ("threshold", rule.threshold.is_some(), &["threshold"]),
            ("base", rule.base.is_some(), &["ratio"]),
            ("min_ratio", rule.min_ratio.is_some(), &["ratio"]),
            ("factor", rule.factor.is_some(), &["jump"]),
            ("baseline", rule.baseline.is_some(), &["jump"]),
            ("fraction", rule.fraction.is_some(), &["nearing_limit"]),
            ("limit", rule.limit.is_some(), &["nearing_limit"]),
            (
                "trend_within",
                rule.trend_within.is_some(),
                &["nearing_limit"],
            ),
        ];
        for (name, present, kinds) in specific {
            if present
                && KNOWN_RULE_KINDS.contains(&rule.kind.as_str())
                && !kinds.contains(&rule.kind.as_str())
            {
                issues.add(
                    format!("{key}.{name}"),
                    format!("does not apply to {} rules", rule.kind),
                );
            }
        }
        let kind = match rule.kind.as_str() {
            "each" => RuleKind::Each {
                window_ms: window(issues, Some(300_000)),
            },
            "threshold" => RuleKind::Threshold {
                window_ms: window(issues, None),
                min: positive(issues, "threshold", rule.threshold),
            },
            "ratio" => {
                let base = match rule.base.clone() {
                    Some(base) => check_matcher(base, &format!("{key}.base"), sources, issues),
                    None => {
                        issues.add(
                            format!("{key}.base"),
                            "expected a matcher for the denominator of a ratio rule",
                        );
                        Matcher::default()
                    }
                };
                let base_group_by = rule
                    .base_group_by
                    .clone()
                    .unwrap_or_else(|| rule.group_by.clone());
                for label in &base_group_by {
                    if !rule.group_by.contains(label) {
                        issues.add(
                            format!("{key}.base_group_by"),
                            format!("expected labels from group_by, found {label:?}"),
                        );
                    }
                }
                let min_ratio = positive(issues, "min_ratio", rule.min_ratio);
                if min_ratio > 1.0 {
                    issues.add(
                        format!("{key}.min_ratio"),
                        format!("expected a fraction such as 0.05 for 5%, found {min_ratio}"),
                    );
                }
                RuleKind::Ratio {
                    window_ms: window(issues, None),
                    base,
                    base_group_by,
                    min_ratio,
                    min_base: rule.min_base.unwrap_or(1.0).max(1.0),
                }
            }
            "jump" => {
                let baseline_ms = match rule.baseline.as_deref() {
                    None => {
                        issues.add(
                            format!("{key}.baseline"),
                            "expected a duration for a jump rule",
                        );
                        3_600_000
                    }
                    text => duration(text, &format!("{key}.baseline"), 3_600_000, issues),
                };
                RuleKind::Jump {
                    window_ms: window(issues, None),
                    baseline_ms,
                    factor: positive(issues, "factor", rule.factor),
                    min_count: positive(issues, "min_count", rule.min_count),
                }
            }
            "nearing_limit" => {
                let fraction = positive(issues, "fraction", rule.fraction);
                if fraction > 1.0 {
                    issues.add(
                        format!("{key}.fraction"),
                        format!("expected a fraction such as 0.85 for 85%, found {fraction}"),
                    );
                }
                let limit = rule
                    .limit
                    .map(|limit| positive(issues, "limit", Some(limit)));
                let trend_within_ms = rule.trend_within.as_deref().map(|text| {
                    duration(
                        Some(text),
                        &format!("{key}.trend_within"),
                        3_600_000,
                        issues,
                    )
                });
                RuleKind::NearingLimit {
                    window_ms: window(issues, Some(3_600_000)),
                    fraction,
                    limit,
                    trend_within_ms,
                }
            }
            "absence" => RuleKind::Absence {
                window_ms: window(issues, None),
            },
            other => {
                issues.add(
                    format!("{key}.kind"),
                    format!(
                        "expected \"each\", \"threshold\", \"ratio\", \"jump\", \
                         \"nearing_limit\" or \"absence\", found {other:?}"
                    ),
                );
                continue;
            }
        };
        for (part, source) in [
            ("summary", &rule.summary),
            ("description", &rule.description),
        ] {
            if let Some(source) = source
                && let Err(e) =
                    templates.register_inline(&format!("rule:{}:{part}", rule.name), source)
            {
                issues.add(
                    format!("{key}.{part}"),
                    format!("expected a handlebars template: {}", e.message),
                );
            }
        }
        rules.push(Arc::new(Rule {
            name: rule.name,
            kind,
            matcher,
            group_by: rule.group_by,
            severity,
            summary: rule.summary.unwrap_or_default(),
            description: rule.description.unwrap_or_default(),
            resolve_ratio,
        }));
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    fn issues(text: &str) -> String {
        match load(text) {
            Ok(_) => panic!("config was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.rules.len() >= 4);
        assert!(config.sources.contains_key("sendgrid"));
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let cases = [
            (
                "[server]\nlisten = \"nowhere\"\n",
                "server.listen: expected host:port",
            ),
            (
                "[server]\nlistn = \"x\"\n",
                "server.listn: line 2: unknown field `listn`",
            ),
            (
                "[[rules]]\nname = \"a\"\nkind = \"threshold\"\nwindow = \"ten\"\nthreshold = 3\n",
                "rules[0].window: expected a duration above zero such as \"10m\" or \"24h\", \
                 found \"ten\"",
            ),
            (
                "[[rules]]\nname = \"a\"\nkind = \"absence\"\nwindow = \"1h\"\nlimit = 5\n",
                "rules[0].limit: does not apply to absence rules",
            ),
            (
                "[[rules]]\nname = \"a\"\nkind = \"nearing_limit\"\nfraction = 85\n",
                "rules[0].fraction: expected a fraction such as 0.85 for 85%, found 85",
            ),
            (
                "[[rules]]\nname = \"a\"\nkind = \"spike\"\n",
                "rules[0].kind: expected \"each\", \"threshold\", \"ratio\", \"jump\", \
                 \"nearing_limit\" or \"absence\", found \"spike\"",
            ),
            (
                "[[rules]]\nname = \"a\"\nkind = \"threshold\"\nwindow = \"5m\"\n",
                "rules[0].threshold: expected a number for a threshold rule",
            ),
            (
                "[[rules]]\nname = \"a\"\nkind = \"each\"\nsummary = \"{{#if}\"\n",
                "rules[0].summary: expected a handlebars template",
            ),
            (
                "[server]\neval_interval = \"500us\"\n",
                "server.eval_interval: expected at least 1ms, found \"500us\"",
            ),
            (
                "[[rules]]\nname = \"a\"\nkind = \"each\"\nwindow = \"200years\"\n",
                "rules[0].window: expected at most 100 years, found \"200years\"",
            ),
            (
                "[[routes]]\ncontacts = [\"pager\"]\n",
                "routes[0].contacts: no contact named \"pager\"",
            ),
            (
                "[sources.sg]\ntype = \"sendgrid\"\nverification_key = \"AAAA\"\n",
                "sources.sg.verification_key: expected the base64 public key",
            ),
            (
                "[sources.sg]\ntype = \"sendgrid\"\n\
                 verification_key = \"${BACKCHANNEL_TEST_UNSET_VAR}\"\n",
                "environment variable BACKCHANNEL_TEST_UNSET_VAR is not set",
            ),
            (
                "[contacts.off]\ntype = \"slack\"\n[[routes]]\ncontacts = [\"pager\"]\n",
                "routes[0].contacts: no contact named \"pager\" (contacts: off)",
            ),
            (
                "[[routes]]\ncontacts = []\nmatch = { severity = [\"critcal\"] }\n",
                "routes[0].match.severity: expected \"info\", \"warning\" or \"critical\", \
                 found \"critcal\"",
            ),
            (
                "[[rules]]\nname = \"a\"\nkind = \"each\"\n\
                 [[routes]]\ncontacts = []\nmatch = { rule = [\"b\"] }\n",
                "routes[0].match.rule: no rule named \"b\" (rules: a)",
            ),
            (
                "[contacts.c]\ntype = \"log\"\ntemplate = \"nope\"\n",
                "contacts.c.template: no template named \"nope\"",
            ),
            (
                "[[rules]]\nname = \"a\"\nkind = \"each\"\n[rules.match]\nsources = [\"ghost\"]\n",
                "rules[0].match.sources: no source named \"ghost\"",
            ),
        ];
        for (text, expected) in cases {
            let message = issues(text);
            assert!(message.contains("bad.toml: "), "{message}");
            assert!(
                message.contains(expected),
                "expected {expected:?} in:\n{message}"
            );
        }
    }

    #[test]
    fn a_slack_template_that_is_not_a_message_is_refused() {
        // Not JSON; a block type Slack does not have; and the same with the contact
        // disabled (no token, no webhook), which must not hide it.
        let cases = [
            (
                "{\"text\": {{summary}}}",
                "webhook_url = \"http://127.0.0.1:9/h\"\n",
                "firing alert, not JSON",
            ),
            (
                "{\"text\": \"{{summary}}\", \"blocks\": [{\"type\": \"bogus\"}]}",
                "webhook_url = \"http://127.0.0.1:9/h\"\n",
                "firing alert, blocks[0] (type \"bogus\") is not a Slack block",
            ),
            ("{\"text\": {{summary}}}", "", "firing alert, not JSON"),
            (
                "{\"text\": \"{{summary}}\", \"blocks\": [{\"type\": \"{{#if (eq status \
                 \"resolved\")}}headr{{else}}header{{/if}}\", \"text\": {\"type\": \
                 \"plain_text\", \"text\": \"x\"}}]}",
                "",
                "resolved alert, blocks[0] (type \"headr\") is not a Slack block",
            ),
            (
                "{\"text\": \"x\", \"blocks\": [{\"type\": \"header\", \"text\": \
                 {\"type\": \"mrkdwn\", \"text\": \"*x*\"}}]}",
                "",
                "firing alert, blocks[0]: a header's text must be plain_text, found \"mrkdwn\"",
            ),
        ];
        for (template, target, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let template_path = dir.path().join("broken.hbs");
            std::fs::write(&template_path, template).unwrap();
            let path = dir.path().join("c.toml");
            std::fs::write(
                &path,
                format!(
                    "[templates]\ndir = \"{}\"\n[contacts.s]\ntype = \"slack\"\n{target}\
                     template = \"broken\"\n",
                    dir.path().display()
                ),
            )
            .unwrap();
            let message = Config::load(&path).err().expect("refused").to_string();
            let prefix = format!(
                "contacts.s.template: expected a template that renders a Slack message; \
                 \"broken\" ({}) does not: for a {expected}",
                template_path.display()
            );
            assert!(message.contains(&prefix), "{message}");
        }
    }

    #[test]
    fn typos_in_sendgrid_kinds_and_labels_are_warned_about() {
        let config = load(
            "[[rules]]\nname = \"a\"\nkind = \"each\"\ngroup_by = [\"domian\"]\n\
             match = { kinds = [\"sendgrid.spam_report\"] }\n",
        )
        .unwrap();
        let warnings = config.warnings.join("\n");
        let expected = "rules[0] (a): match.kinds: \"sendgrid.spam_report\" \
                        is not a documented SendGrid event type";
        assert!(warnings.contains(expected), "{warnings}");
        assert!(
            warnings.contains("rules[0] (a): SendGrid events have no label \"domian\""),
            "{warnings}"
        );
    }

    #[test]
    fn routes_that_can_never_notify_are_warned_about() {
        let config = load(
            "[contacts.c]\ntype = \"log\"\n\
             [[rules]]\nname = \"a\"\nkind = \"each\"\ngroup_by = [\"domain\"]\n\
             [[routes]]\ncontacts = [\"c\"]\nmatch = { domian = \"x\", domain = \"y\" }\n\
             [[routes]]\ncontacts = []\n",
        )
        .unwrap();
        let warnings = config.warnings.join("\n");
        assert!(
            warnings.contains(
                "routes[0].match.domian: no rule groups by \"domian\", so alerts never carry \
                 it and this route never matches"
            ),
            "{warnings}"
        );
        assert!(!warnings.contains("match.domain"), "{warnings}");
        assert!(
            warnings.contains(
                "routes[1].contacts: empty, so the alerts this route matches notify nobody"
            ),
            "{warnings}"
        );
    }

    #[test]
    fn every_issue_is_reported() {
        let message = issues(
            "[server]\nlisten = \"x\"\neval_interval = \"soon\"\n[store]\ndedup_horizon = \"0s\"\n",
        );
        assert_eq!(message.lines().count(), 3, "{message}");
    }

    #[test]
    fn empty_slack_token_disables_the_contact() {
        let config = load(
            "[contacts.s]\ntype = \"slack\"\ntoken = \"${BACKCHANNEL_TEST_UNSET_VAR:-}\"\n\
             channel = \"#x\"\n[[routes]]\ncontacts = [\"s\"]\n",
        )
        .unwrap();
        assert!(config.contacts.is_empty());
        assert!(config.routes[0].contacts.is_empty());
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("contacts.s: disabled")),
            "{:?}",
            config.warnings
        );
    }
}
