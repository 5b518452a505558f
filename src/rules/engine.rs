//! The rule engine: per rule, per group, the windows that events fill, and the check of
//! each group's condition at a given instant.
//!
//! Time is whatever the caller says it is: the receive time in `serve`, the event time in
//! `replay`. The engine never reads a clock, which is what makes replays and tests exact.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::window::Window;
use super::{Facts, Rule, RuleKind, fmt_number, jump_holds, jump_measure};
use crate::event::Event;

/// The result of checking one group: what `alerts` needs to decide.
#[derive(Debug, Clone)]
pub struct GroupOutcome {
    pub rule: Arc<Rule>,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub holds: bool,
    pub facts: Facts,
    /// The latest event that counted for this group, for the alert's context.
    pub last_event: Option<Arc<Event>>,
}

/// One group's state, kept small: with high-cardinality `group_by` there are hundreds
/// of thousands. Labels and the ratio base key are derived from the map key when
/// needed, and the latest event is kept only while the condition holds or fires.
#[derive(Debug)]
struct GroupState {
    fingerprint: u64,
    /// The rule's window (the recent window of a jump rule).
    primary: Window,
    /// Jump rules: window plus baseline.
    long: Option<Window>,
    first_seen_ms: i64,
    last_event: Option<Arc<Event>>,
    dirty: bool,
}

#[derive(Debug)]
struct RuleState {
    rule: Arc<Rule>,
    groups: HashMap<String, GroupState>,
    /// Ratio rules: base weight per base group.
    bases: HashMap<String, Window>,
}

/// All rules' windows.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<RuleState>,
}

impl Engine {
    pub fn new(rules: &[Arc<Rule>]) -> Self {
        Self {
            rules: rules
                .iter()
                .map(|rule| RuleState {
                    rule: rule.clone(),
                    groups: HashMap::new(),
                    bases: HashMap::new(),
                })
                .collect(),
        }
    }

    /// Longest lookback any rule needs, to rebuild windows from the journal.
    pub fn lookback_ms(&self) -> i64 {
        self.rules
            .iter()
            .map(|r| r.rule.lookback_ms())
            .max()
            .unwrap_or(0)
    }

    /// Counts `event` at `at_ms` in every rule it matches, marking those groups for
    /// evaluation.
    pub fn observe(&mut self, event: Event, at_ms: i64) {
        let event = Arc::new(event);
        for state in &mut self.rules {
            let rule = &state.rule;
            if let RuleKind::Ratio {
                base,
                base_group_by,
                window_ms,
                ..
            } = &rule.kind
                && base.matches(&event)
            {
                let key = key_of(base_group_by, &event);
                state
                    .bases
                    .entry(key)
                    .or_insert_with(|| Window::new(*window_ms))
                    .add(at_ms, event.weight);
            }
            if !rule.matcher.matches(&event) {
                continue;
            }
            let key = key_of(&rule.group_by, &event);
            let group = match state.groups.get_mut(&key) {
                Some(group) => group,
                None => state
                    .groups
                    .entry(key)
                    .or_insert_with_key(|key| new_group(rule, key, at_ms)),
            };
            group.primary.add(at_ms, event.weight);
            if let Some(long) = &mut group.long {
                long.add(at_ms, event.weight);
            }
            group.last_event = Some(event.clone());
            group.dirty = true;
        }
    }

    /// Checks groups at `now_ms`: only those that received events since the last check
    /// when `only_dirty`, else all. Returns the groups whose condition holds or that
    /// `is_firing` says are firing; forgets groups with empty windows that are not firing.
    pub fn evaluate(
        &mut self,
        now_ms: i64,
        only_dirty: bool,
        is_firing: impl Fn(u64) -> bool,
    ) -> Vec<GroupOutcome> {
        let mut outcomes = Vec::new();
        for state in &mut self.rules {
            let rule = state.rule.clone();
            let bases = &mut state.bases;
            state.groups.retain(|key, group| {
                if only_dirty && !group.dirty {
                    return true;
                }
                group.dirty = false;
                let firing = is_firing(group.fingerprint);
                let (holds, facts) = check(&rule, key, group, bases, now_ms, firing);
                if holds || firing {
                    outcomes.push(GroupOutcome {
                        rule: rule.clone(),
                        fingerprint: format!("{:016x}", group.fingerprint),
                        labels: labels_of(&rule.group_by, key),
                        holds,
                        facts,
                        last_event: group.last_event.clone(),
                    });
                } else {
                    group.last_event = None;
                }
                firing
                    || !group.primary.is_empty()
                    || group.long.as_ref().is_some_and(|w| !w.is_empty())
            });
            if !only_dirty {
                bases.retain(|_, w| {
                    w.sum(now_ms);
                    !w.is_empty()
                });
            }
        }
        outcomes
    }

    /// Number of groups held across all rules.
    pub fn group_count(&self) -> usize {
        self.rules
            .iter()
            .map(|r| r.groups.len() + r.bases.len())
            .sum()
    }
}

fn new_group(rule: &Rule, key: &str, at_ms: i64) -> GroupState {
    let (primary, long) = match &rule.kind {
        RuleKind::Each { window_ms }
        | RuleKind::Threshold { window_ms, .. }
        | RuleKind::Ratio { window_ms, .. } => (Window::new(*window_ms), None),
        RuleKind::Jump {
            window_ms,
            baseline_ms,
            ..
        } => (
            Window::new(*window_ms),
            Some(Window::new(window_ms + baseline_ms)),
        ),
    };
    GroupState {
        fingerprint: fingerprint_id(&rule.name, &labels_of(&rule.group_by, key)),
        primary,
        long,
        first_seen_ms: at_ms,
        last_event: None,
        dirty: true,
    }
}

/// The group labels encoded in a group key (values in `group_by` order).
fn labels_of(group_by: &[String], key: &str) -> BTreeMap<String, String> {
    group_by
        .iter()
        .cloned()
        .zip(key.split('\u{1f}').map(str::to_string))
        .collect()
}

/// The ratio base key for a group key: the values of `base_group_by`, taken from the
/// group key since `base_group_by` is a subset of `group_by`.
fn base_key_of(group_by: &[String], base_group_by: &[String], key: &str) -> String {
    let values: Vec<&str> = key.split('\u{1f}').collect();
    let mut base = String::new();
    for label in base_group_by {
        if let Some(index) = group_by.iter().position(|g| g == label) {
            base.push_str(values.get(index).copied().unwrap_or_default());
        }
        base.push('\u{1f}');
    }
    base
}

fn check(
    rule: &Rule,
    key: &str,
    group: &mut GroupState,
    bases: &mut HashMap<String, Window>,
    now_ms: i64,
    firing: bool,
) -> (bool, Facts) {
    // While firing, the bar to stay firing is lowered by `resolve_ratio`.
    let bar = if firing { rule.resolve_ratio } else { 1.0 };
    let count = group.primary.sum(now_ms);
    match &rule.kind {
        RuleKind::Each { .. } => {
            let facts = Facts {
                count,
                measure: format!("{} matching", fmt_number(count)),
                ..Facts::default()
            };
            (count > 0.0, facts)
        }
        RuleKind::Threshold { window_ms, min } => {
            let measure = format!(
                "{} in {} (threshold {})",
                fmt_number(count),
                duration_text(*window_ms),
                fmt_number(*min)
            );
            (
                count > 0.0 && count >= min * bar,
                Facts {
                    count,
                    measure,
                    ..Facts::default()
                },
            )
        }
        RuleKind::Ratio {
            min_ratio,
            min_base,
            window_ms,
            base_group_by,
            ..
        } => {
            let base_key = base_key_of(&rule.group_by, base_group_by, key);
            let base = bases
                .get_mut(&base_key)
                .map(|w| w.sum(now_ms))
                .unwrap_or(0.0);
            let ratio = if base > 0.0 { count / base } else { 0.0 };
            let enough_base = if firing {
                base > 0.0
            } else {
                base >= *min_base
            };
            let holds = enough_base && count > 0.0 && ratio >= min_ratio * bar;
            let measure = format!(
                "{}% ({} of {} in {})",
                fmt_number(ratio * 100.0),
                fmt_number(count),
                fmt_number(base),
                duration_text(*window_ms)
            );
            (
                holds,
                Facts {
                    count,
                    base: Some(base),
                    ratio: Some(ratio),
                    measure,
                    ..Facts::default()
                },
            )
        }
        RuleKind::Jump {
            window_ms,
            baseline_ms,
            factor,
            min_count,
        } => {
            let long = group.long.as_mut().map(|w| w.sum(now_ms)).unwrap_or(0.0);
            let baseline_count = (long - count).max(0.0);
            // The baseline covers at most what the group has been observed for, so a
            // young group is not compared with a day it never had.
            let observed_ms = (now_ms - group.first_seen_ms - window_ms).clamp(0, *baseline_ms);
            let expected = baseline_count * *window_ms as f64 / observed_ms.max(*window_ms) as f64;
            let holds = jump_holds(count, expected * bar, *factor, min_count * bar);
            let facts = Facts {
                count,
                expected: Some(expected),
                measure: jump_measure(count, expected),
                ..Facts::default()
            };
            (holds, facts)
        }
    }
}

/// A window length as people write it: `10m`, `1day`.
pub fn duration_text(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs((ms / 1000).max(0) as u64))
        .to_string()
}

fn key_of(group_by: &[String], event: &Event) -> String {
    let mut key = String::new();
    for name in group_by {
        key.push_str(event.label(name).unwrap_or_default());
        key.push('\u{1f}');
    }
    key
}

/// Stable identity of an alert: the rule name and its group labels. Shown as 16 hex
/// digits.
pub fn fingerprint_id(rule: &str, labels: &BTreeMap<String, String>) -> u64 {
    let mut parts: Vec<&str> = vec![rule];
    for (name, value) in labels {
        parts.push(name);
        parts.push(value);
    }
    crate::sources::dedup_key("alert", &parts) as u64
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::rules::{Matcher, Severity};

    fn event(kind: &str, labels: &[(&'static str, &str)]) -> Event {
        let mut labels: Vec<_> = labels
            .iter()
            .map(|(k, v)| (Cow::Borrowed(*k), Cow::Owned(v.to_string())))
            .collect();
        labels.sort();
        Event {
            source: Arc::from("sg"),
            kind: Cow::Owned(kind.into()),
            time_ms: 0,
            weight: 1.0,
            value: None,
            limit: None,
            labels,
            provider_id: None,
            traceparent: None,
            raw: "{}".into(),
        }
    }

    fn rule(kind: RuleKind, kinds: &[&str], group_by: &[&str]) -> Arc<Rule> {
        Arc::new(Rule {
            name: "r".into(),
            kind,
            matcher: Matcher {
                kinds: kinds.iter().map(|k| k.to_string()).collect(),
                ..Matcher::default()
            },
            group_by: group_by.iter().map(|g| g.to_string()).collect(),
            severity: Severity::Warning,
            summary: String::new(),
            description: String::new(),
            resolve_ratio: 0.8,
        })
    }

    fn holds(engine: &mut Engine, now: i64, firing: bool) -> Vec<bool> {
        engine
            .evaluate(now, false, |_| firing)
            .into_iter()
            .map(|o| o.holds)
            .collect()
    }

    #[test]
    fn threshold_per_group_with_hysteresis() {
        let r = rule(
            RuleKind::Threshold {
                window_ms: 600_000,
                min: 5.0,
            },
            &["sendgrid.bounce"],
            &["domain"],
        );
        let mut engine = Engine::new(&[r]);
        for i in 0..5 {
            engine.observe(
                event("sendgrid.bounce", &[("domain", "a.example")]),
                i * 1000,
            );
            engine.observe(event("sendgrid.open", &[("domain", "a.example")]), i * 1000);
        }
        engine.observe(event("sendgrid.bounce", &[("domain", "b.example")]), 0);
        let outcomes = engine.evaluate(5_000, true, |_| false);
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].labels["domain"], "a.example");
        assert_eq!(outcomes[0].facts.count, 5.0);
        // 4 stays firing under hysteresis (4 >= 0.8 * 5) but would not fire anew.
        let mut e2 = Engine::new(&[rule(
            RuleKind::Threshold {
                window_ms: 600_000,
                min: 5.0,
            },
            &[],
            &[],
        )]);
        for i in 0..4 {
            e2.observe(event("x", &[]), i);
        }
        assert_eq!(holds(&mut e2, 10, false), Vec::<bool>::new());
        assert_eq!(holds(&mut e2, 10, true), vec![true]);
        assert_eq!(holds(&mut e2, 700_000, true), vec![false], "window passed");
        assert_eq!(e2.group_count(), 1, "a firing group is kept until resolved");
        assert_eq!(holds(&mut e2, 700_000, false), Vec::<bool>::new());
        assert_eq!(
            e2.group_count(),
            0,
            "empty, non-firing groups are forgotten"
        );
    }

    #[test]
    fn ratio_uses_base_of_the_subgroup() {
        let r = rule(
            RuleKind::Ratio {
                window_ms: 600_000,
                base: Matcher {
                    kinds: vec!["sendgrid.processed".into(), "sendgrid.dropped".into()],
                    ..Matcher::default()
                },
                base_group_by: vec![],
                min_ratio: 0.05,
                min_base: 20.0,
            },
            &["sendgrid.dropped"],
            &["reason"],
        );
        let mut engine = Engine::new(&[r]);
        for i in 0..18 {
            engine.observe(event("sendgrid.processed", &[]), i);
        }
        engine.observe(event("sendgrid.dropped", &[("reason", "invalid")]), 20);
        assert!(
            engine.evaluate(30, false, |_| false).is_empty(),
            "base 19 is below min_base 20"
        );
        engine.observe(event("sendgrid.dropped", &[("reason", "invalid")]), 21);
        let outcomes = engine.evaluate(30, false, |_| false);
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].facts.base, Some(20.0));
        assert_eq!(outcomes[0].facts.ratio, Some(0.1));
        assert_eq!(outcomes[0].facts.measure, "10% (2 of 20 in 10m)");
    }

    #[test]
    fn jump_compares_with_observed_baseline() {
        let hour = 3_600_000;
        let r = rule(
            RuleKind::Jump {
                window_ms: 600_000,
                baseline_ms: 24 * hour,
                factor: 10.0,
                min_count: 5.0,
            },
            &["sendgrid.dropped"],
            &[],
        );
        let mut engine = Engine::new(&[r]);
        // One drop an hour for ten hours: about 0.17 expected per ten minutes.
        for h in 0..10 {
            engine.observe(event("sendgrid.dropped", &[]), h * hour);
        }
        let now = 10 * hour + 300_000;
        assert!(engine.evaluate(now, false, |_| false).is_empty());
        for i in 0..5 {
            engine.observe(event("sendgrid.dropped", &[]), now + i);
        }
        let outcomes = engine.evaluate(now + 10, false, |_| false);
        assert_eq!(outcomes.len(), 1, "5 against ~0.17 expected");
        assert!(outcomes[0].holds);
        let expected = outcomes[0].facts.expected.unwrap();
        assert!(expected > 0.1 && expected < 0.3, "{expected}");
    }

    #[test]
    fn each_fires_per_group_and_resolves_after_its_window() {
        let r = rule(
            RuleKind::Each { window_ms: 300_000 },
            &["sendgrid.spamreport"],
            &["domain"],
        );
        let mut engine = Engine::new(&[r]);
        engine.observe(event("sendgrid.spamreport", &[("domain", "a")]), 0);
        engine.observe(event("sendgrid.spamreport", &[("domain", "b")]), 0);
        assert_eq!(holds(&mut engine, 1, false), vec![true, true]);
        assert_eq!(holds(&mut engine, 400_000, true), vec![false, false]);
    }
}
