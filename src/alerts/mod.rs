//! Alerts: the state machine from "a rule's condition holds for a group" to "these
//! contacts must be told this".
//!
//! An alert's identity is its rule and group labels (the fingerprint). It fires once,
//! repeats per route after `repeat_interval`, resolves when the condition clears, and can
//! fire again after resolving whether or not the resolution was sent. This module
//! decides; `runner.rs` persists the decision with its outbox rows in one transaction,
//! and `notify` delivers.

pub mod runner;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::rules::{Facts, GroupOutcome, Severity};
use crate::store::AlertRow;
use crate::templates::{Context, Templates};

/// Where an alert goes: alerts whose labels match go to `contacts`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Alert label name to accepted values; `rule` and `severity` are labels too.
    pub matchers: Vec<(String, Vec<String>)>,
    pub contacts: Vec<String>,
    pub repeat_interval_ms: i64,
    pub send_resolved: bool,
    /// Keep looking for more matching routes after this one.
    pub continue_matching: bool,
}

impl Route {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|(name, values)| {
            labels
                .get(name)
                .is_some_and(|v| values.iter().any(|x| x == v))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// Everything a channel template sees, and what the outbox stores per delivery.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub fingerprint: String,
    pub rule: String,
    pub status: Status,
    /// A reminder for an alert that is still firing.
    pub repeat: bool,
    pub severity: Severity,
    /// Group labels plus `rule` and `severity`.
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub description: String,
    pub facts: Facts,
    /// When the alert started firing and when this notification was decided (RFC 3339).
    pub started_at: String,
    pub at: String,
    pub at_ms: i64,
    /// Link to the trace of the latest event, when it carried a `traceparent`.
    pub trace_url: Option<String>,
    /// The latest event as the provider sent it.
    pub event: Option<serde_json::Value>,
    /// Contacts this notification goes to.
    pub contacts: Vec<String>,
}

impl Notification {
    /// A representative notification, used by `check` to prove templates render.
    pub fn sample() -> Self {
        Notification {
            fingerprint: "0123456789abcdef".into(),
            rule: "sample-rule".into(),
            status: Status::Firing,
            repeat: false,
            severity: Severity::Warning,
            labels: BTreeMap::from([
                ("domain".to_string(), "example.com".to_string()),
                ("rule".to_string(), "sample-rule".to_string()),
                ("severity".to_string(), "warning".to_string()),
            ]),
            summary: "Sample: 12 dropped <invalid> & more".into(),
            description: "A sample description.".into(),
            facts: Facts {
                count: 12.0,
                measure: "12 in 10m (threshold 10)".into(),
                ..Facts::default()
            },
            started_at: rfc3339(0),
            at: rfc3339(0),
            at_ms: 0,
            trace_url: Some("https://traces.example/trace/4bf92f3577b34da6a3ce929d0e0e4736".into()),
            event: Some(serde_json::json!({"event": "dropped", "email": "someone@example.com"})),
            contacts: vec!["sample".into()],
        }
    }

    /// The sample in each state a template must render: firing, repeating, resolved
    /// (without trace link or event, as a resolution after a restart may be).
    pub fn samples() -> [Self; 3] {
        let firing = Self::sample();
        let repeat = Self {
            repeat: true,
            ..Self::sample()
        };
        let resolved = Self {
            status: Status::Resolved,
            trace_url: None,
            event: None,
            ..Self::sample()
        };
        [firing, repeat, resolved]
    }

    /// The key that makes a delivery to `contact` happen once per decision.
    pub fn idempotency_key(&self, contact: &str) -> String {
        format!(
            "{}/{}/{}/{}",
            self.fingerprint,
            self.status.as_str(),
            self.at_ms,
            contact
        )
    }
}

#[derive(Debug, Clone)]
struct AlertState {
    rule: String,
    labels: BTreeMap<String, String>,
    status: Status,
    started_ms: i64,
    resolved_ms: Option<i64>,
    seq: i64,
    /// Route index to the time of the last firing notification through it.
    notified: BTreeMap<usize, i64>,
}

/// An alert change to persist, with the notifications it causes.
#[derive(Debug, Clone)]
pub struct Change {
    pub row: AlertRow,
    pub notifications: Vec<Notification>,
}

/// All alerts' states; the single decider of what gets sent.
#[derive(Debug)]
pub struct AlertBook {
    alerts: HashMap<String, AlertState>,
    /// Fingerprints of the firing alerts, for the engine's per-group check.
    firing: HashSet<u64>,
    routes: Arc<[Route]>,
    templates: Arc<Templates>,
    trace_url: Option<String>,
}

impl AlertBook {
    pub fn new(routes: Arc<[Route]>, templates: Arc<Templates>, trace_url: Option<String>) -> Self {
        Self {
            alerts: HashMap::new(),
            firing: HashSet::new(),
            routes,
            templates,
            trace_url,
        }
    }

    /// Restores states saved by the runner.
    pub fn restore(&mut self, rows: Vec<AlertRow>) -> Result<(), String> {
        for row in rows {
            let labels = serde_json::from_str(&row.labels)
                .map_err(|e| format!("alert {}: labels: {e}", row.fingerprint))?;
            let notified = serde_json::from_str(&row.notified)
                .map_err(|e| format!("alert {}: notified: {e}", row.fingerprint))?;
            let status = if row.status == "firing" {
                Status::Firing
            } else {
                Status::Resolved
            };
            if status == Status::Firing {
                let id = u64::from_str_radix(&row.fingerprint, 16)
                    .map_err(|e| format!("alert {}: fingerprint: {e}", row.fingerprint))?;
                self.firing.insert(id);
            }
            self.alerts.insert(
                row.fingerprint,
                AlertState {
                    rule: row.rule,
                    labels,
                    status,
                    started_ms: row.started_ms,
                    resolved_ms: row.resolved_ms,
                    seq: row.seq,
                    notified,
                },
            );
        }
        Ok(())
    }

    pub fn is_firing(&self, fingerprint: &str) -> bool {
        u64::from_str_radix(fingerprint, 16).is_ok_and(|id| self.firing.contains(&id))
    }

    /// Whether the alert with this fingerprint is firing.
    pub fn is_firing_id(&self, fingerprint: u64) -> bool {
        self.firing.contains(&fingerprint)
    }

    pub fn firing_count(&self) -> usize {
        self.firing.len()
    }

    /// Forgets alerts resolved before `before_ms`, as the store does when it prunes.
    pub fn forget_resolved_before(&mut self, before_ms: i64) {
        self.alerts.retain(|_, a| {
            a.status == Status::Firing || a.resolved_ms.is_none_or(|r| r >= before_ms)
        });
    }

    /// Decides what each outcome means at `now_ms`.
    pub fn apply(&mut self, outcomes: Vec<GroupOutcome>, now_ms: i64) -> Vec<Change> {
        outcomes
            .into_iter()
            .filter_map(|o| self.apply_one(o, now_ms))
            .collect()
    }

    fn apply_one(&mut self, outcome: GroupOutcome, now_ms: i64) -> Option<Change> {
        let mut labels = outcome.labels.clone();
        labels.insert("rule".into(), outcome.rule.name.clone());
        labels.insert("severity".into(), outcome.rule.severity.as_str().into());
        let routes: Vec<usize> = self.matching_routes(&labels);
        let id = u64::from_str_radix(&outcome.fingerprint, 16).unwrap_or_default();

        let state = self
            .alerts
            .entry(outcome.fingerprint.clone())
            .or_insert_with(|| AlertState {
                rule: outcome.rule.name.clone(),
                labels: labels.clone(),
                status: Status::Resolved,
                started_ms: now_ms,
                resolved_ms: None,
                seq: 0,
                notified: BTreeMap::new(),
            });

        let mut send_to: Vec<usize> = Vec::new();
        let mut repeat = false;
        match (outcome.holds, state.status) {
            (true, Status::Resolved) => {
                state.status = Status::Firing;
                self.firing.insert(id);
                state.started_ms = now_ms;
                state.resolved_ms = None;
                state.seq += 1;
                state.notified.clear();
                send_to = routes.clone();
            }
            (true, Status::Firing) => {
                for &route in &routes {
                    let due = state
                        .notified
                        .get(&route)
                        .is_none_or(|last| now_ms - last >= self.routes[route].repeat_interval_ms);
                    if due {
                        send_to.push(route);
                        repeat = state.notified.contains_key(&route);
                    }
                }
                if send_to.is_empty() {
                    return None;
                }
            }
            (false, Status::Firing) => {
                state.status = Status::Resolved;
                self.firing.remove(&id);
                state.resolved_ms = Some(now_ms);
                send_to = routes
                    .iter()
                    .copied()
                    .filter(|r| self.routes[*r].send_resolved && state.notified.contains_key(r))
                    .collect();
                // Forget what was sent whether or not the resolution goes out, so the
                // next firing is told (field case B29).
                state.notified.clear();
            }
            (false, Status::Resolved) => return None,
        }
        if state.status == Status::Firing {
            for &route in &send_to {
                state.notified.insert(route, now_ms);
            }
        }
        let state = state.clone();

        let mut contacts: Vec<String> = Vec::new();
        for route in &send_to {
            for contact in &self.routes[*route].contacts {
                if !contacts.contains(contact) {
                    contacts.push(contact.clone());
                }
            }
        }
        let notifications = if contacts.is_empty() {
            Vec::new()
        } else {
            vec![self.notification(&outcome, &state, labels, repeat, contacts, now_ms)]
        };
        let row = AlertRow {
            fingerprint: outcome.fingerprint,
            rule: state.rule,
            labels: serde_json::to_string(&state.labels).expect("labels serialise"),
            status: state.status.as_str().into(),
            started_ms: state.started_ms,
            resolved_ms: state.resolved_ms,
            seq: state.seq,
            notified: serde_json::to_string(&state.notified).expect("map serialises"),
        };
        Some(Change { row, notifications })
    }

    fn matching_routes(&self, labels: &BTreeMap<String, String>) -> Vec<usize> {
        let mut found = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            if route.matches(labels) {
                found.push(index);
                if !route.continue_matching {
                    break;
                }
            }
        }
        found
    }

    fn notification(
        &self,
        outcome: &GroupOutcome,
        state: &AlertState,
        labels: BTreeMap<String, String>,
        repeat: bool,
        contacts: Vec<String>,
        now_ms: i64,
    ) -> Notification {
        let event: Option<serde_json::Value> = outcome
            .last_event
            .as_ref()
            .and_then(|e| event_value(&e.raw, MAX_EVENT_DEPTH));
        let trace_url = match (
            &self.trace_url,
            outcome
                .last_event
                .as_ref()
                .and_then(|e| e.traceparent.as_deref()),
        ) {
            (Some(pattern), Some(traceparent)) => {
                crate::event::parse_traceparent(traceparent).map(|t| {
                    pattern
                        .replace("{trace_id}", &t.trace_id)
                        .replace("{span_id}", &t.span_id)
                })
            }
            _ => None,
        };
        let rule = &outcome.rule;
        let data = serde_json::json!({
            "rule": rule.name,
            "severity": rule.severity,
            "labels": labels,
            "facts": outcome.facts,
            "event": event,
        });
        let render = |part: &str, fallback: String| {
            let name = format!("rule:{}:{part}", rule.name);
            if !self.templates.has(&name) {
                return fallback;
            }
            self.templates
                .render(&name, Context::Text, &data)
                .unwrap_or_else(|error| {
                    tracing::warn!(
                        error = %error,
                        rule = %rule.name,
                        "summary template failed; using the default wording",
                    );
                    fallback
                })
        };
        let summary = render(
            "summary",
            format!("{}: {}", rule.name, outcome.facts.measure),
        );
        let description = render("description", String::new());
        Notification {
            fingerprint: outcome.fingerprint.clone(),
            rule: rule.name.clone(),
            status: state.status,
            repeat,
            severity: rule.severity,
            labels,
            summary,
            description,
            facts: outcome.facts.clone(),
            started_at: rfc3339(state.started_ms),
            at: rfc3339(now_ms),
            at_ms: now_ms,
            trace_url,
            event,
            contacts,
        }
    }
}

/// How deep a provider's event is kept in a notification. Deeper values are replaced
/// by a marker, so a pathological payload cannot make the stored notification
/// unreadable (serde_json refuses nesting past 128 levels).
const MAX_EVENT_DEPTH: usize = 16;

/// The provider's event as JSON for templates, cut at `depth`. serde_json refuses to
/// build values nested past 128 levels, so a value that deep is taken apart through raw
/// values (which it skips at any depth): one deep field is cut, the others stay.
fn event_value(raw: &str, depth: usize) -> Option<serde_json::Value> {
    use serde_json::Value;
    use serde_json::value::RawValue;
    if let Ok(value) = serde_json::from_str::<Value>(raw) {
        return Some(limit_depth(value, depth));
    }
    let first = raw.trim_start().as_bytes().first()?;
    if depth == 0 && matches!(first, b'{' | b'[') {
        return Some(Value::String("…".into()));
    }
    match first {
        b'{' => {
            let members: BTreeMap<String, Box<RawValue>> = serde_json::from_str(raw).ok()?;
            Some(Value::Object(
                members
                    .into_iter()
                    .map(|(k, v)| {
                        let cut = event_value(v.get(), depth - 1).unwrap_or(Value::Null);
                        (k, cut)
                    })
                    .collect(),
            ))
        }
        b'[' => {
            let items: Vec<Box<RawValue>> = serde_json::from_str(raw).ok()?;
            Some(Value::Array(
                items
                    .iter()
                    .map(|v| event_value(v.get(), depth - 1).unwrap_or(Value::Null))
                    .collect(),
            ))
        }
        _ => None,
    }
}

/// `value` with everything nested deeper than `depth` replaced by `"…"`.
fn limit_depth(value: serde_json::Value, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Array(_) | Value::Object(_) if depth == 0 => Value::String("…".into()),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| limit_depth(v, depth - 1))
                .collect(),
        ),
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(k, v)| (k, limit_depth(v, depth - 1)))
                .collect(),
        ),
        scalar => scalar,
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC, seconds precision.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Matcher, Rule, RuleKind};

    fn book(send_resolved: bool) -> AlertBook {
        let routes: Arc<[Route]> = Arc::from(vec![Route {
            matchers: vec![],
            contacts: vec!["slack".into()],
            repeat_interval_ms: 3 * 3_600_000,
            send_resolved,
            continue_matching: false,
        }]);
        AlertBook::new(routes, Arc::new(Templates::load(None).unwrap()), None)
    }

    fn outcome(holds: bool) -> GroupOutcome {
        GroupOutcome {
            rule: Arc::new(Rule {
                name: "TimeBasedTest".into(),
                kind: RuleKind::Each { window_ms: 60_000 },
                matcher: Matcher::default(),
                group_by: vec![],
                severity: Severity::Warning,
                summary: String::new(),
                description: String::new(),
                resolve_ratio: 0.8,
            }),
            fingerprint: "aa11bb22cc33dd44".into(),
            labels: BTreeMap::new(),
            holds,
            facts: Facts::default(),
            last_event: None,
        }
    }

    /// Field case B29: with resolutions not sent, every re-fire after a resolve is still
    /// told, and a repeat without a resolve waits for `repeat_interval`.
    #[test]
    fn b29_flapping_alert_without_sent_resolutions() {
        let mut book = book(false);
        let minute = 60_000;
        let mut firing = 0;
        let mut resolved = 0;
        for (t, holds) in [
            (0, true),
            (1, true),
            (5, false),
            (10, true),
            (15, false),
            (20, true),
            (21, true),
        ] {
            for change in book.apply(vec![outcome(holds)], t * minute) {
                for n in change.notifications {
                    match n.status {
                        Status::Firing => firing += 1,
                        Status::Resolved => resolved += 1,
                    }
                }
            }
        }
        assert_eq!((firing, resolved), (3, 0));

        let later = book.apply(vec![outcome(true)], 20 * minute + 3 * 3_600_000);
        assert_eq!(later.len(), 1);
        assert!(
            later[0].notifications[0].repeat,
            "after repeat_interval the reminder goes out"
        );
    }

    #[test]
    fn events_past_serde_json_depth_keep_their_other_fields() {
        for levels in [100, 130, 10_000] {
            let deep = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
            let raw = format!("{{\"reason\":\"550 no such user\",\"x\":{deep}}}");
            let value = event_value(&raw, MAX_EVENT_DEPTH).expect("an object");
            assert_eq!(value["reason"], "550 no such user", "{levels} levels");
            let mut inner = &value["x"];
            for _ in 0..MAX_EVENT_DEPTH - 1 {
                inner = &inner[0];
            }
            assert_eq!(*inner, serde_json::json!("…"), "{levels} levels");
        }
    }

    #[test]
    fn deep_events_are_cut_to_a_readable_depth() {
        let deep = format!("{}1{}", "[".repeat(126), "]".repeat(126));
        let value: serde_json::Value = serde_json::from_str(&format!("{{\"x\":{deep}}}")).unwrap();
        let limited = limit_depth(value, MAX_EVENT_DEPTH);
        let stored =
            serde_json::to_string(&serde_json::json!({ "notification": { "event": limited } }))
                .unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&stored).is_ok());
        assert!(stored.contains("\"…\""));
    }

    #[test]
    fn resolutions_sent_when_asked() {
        let mut book = book(true);
        let fire = book.apply(vec![outcome(true)], 0);
        assert_eq!(fire[0].notifications[0].status, Status::Firing);
        assert!(book.is_firing("aa11bb22cc33dd44"));
        let resolve = book.apply(vec![outcome(false)], 1000);
        assert_eq!(resolve[0].notifications[0].status, Status::Resolved);
        assert_eq!(resolve[0].row.status, "resolved");
        assert!(book.apply(vec![outcome(false)], 2000).is_empty());
    }
}
