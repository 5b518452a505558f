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
    /// Absence rules: when the group last had an event (or was first checked).
    last_seen_ms: i64,
    /// Nearing-limit rules: the recent readings.
    readings: Option<Box<Readings>>,
    last_event: Option<Arc<Event>>,
    dirty: bool,
}

/// A nearing-limit group's readings within the window: enough to know the latest value
/// and the rise since the oldest one.
#[derive(Debug, Default)]
struct Readings {
    /// (time, value, limit), oldest first.
    samples: std::collections::VecDeque<(i64, f64, f64)>,
}

/// Readings kept per group; when full, the second oldest goes, so the oldest (the
/// trend's start) and the newest stay.
const MAX_READINGS: usize = 32;

impl Readings {
    fn push(&mut self, at_ms: i64, value: f64, limit: f64) {
        // Out-of-order readings keep time order, so the newest is always last.
        let index = self.samples.partition_point(|(t, _, _)| *t <= at_ms);
        self.samples.insert(index, (at_ms, value, limit));
        if self.samples.len() > MAX_READINGS {
            self.samples.remove(1);
        }
    }

    fn prune(&mut self, now_ms: i64, window_ms: i64) {
        while self
            .samples
            .front()
            .is_some_and(|(t, _, _)| *t <= now_ms - window_ms)
        {
            self.samples.pop_front();
        }
    }
}

#[derive(Debug)]
struct RuleState {
    rule: Arc<Rule>,
    groups: HashMap<String, GroupState>,
    /// Ratio rules: base weight per base group.
    bases: HashMap<String, Window>,
    /// Absence rules without `group_by`: whether the one group was created at the first
    /// check, so silence from the start counts.
    seeded: bool,
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
                    seeded: false,
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
            // A nearing-limit rule counts only events that say how far along they are.
            let reading = match &rule.kind {
                RuleKind::NearingLimit { limit, .. } => {
                    let Some(value) = event.value.filter(|v| v.is_finite()) else {
                        continue;
                    };
                    let Some(limit) = event.limit.or(*limit).filter(|l| l.is_finite() && *l > 0.0)
                    else {
                        continue;
                    };
                    Some((value, limit))
                }
                _ => None,
            };
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
            if let Some((value, limit)) = reading {
                group
                    .readings
                    .get_or_insert_with(Box::default)
                    .push(at_ms, value, limit);
            }
            group.last_seen_ms = group.last_seen_ms.max(at_ms);
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
            if matches!(rule.kind, RuleKind::Absence { .. })
                && rule.group_by.is_empty()
                && !state.seeded
            {
                state.seeded = true;
                state
                    .groups
                    .entry(String::new())
                    .or_insert_with(|| new_group(&rule, "", now_ms));
            }
            let is_absence = matches!(rule.kind, RuleKind::Absence { .. });
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
                // An absence group is what remembers that there was something to miss.
                // FIXME: such groups are never forgotten, so memory grows with every
                // group value ever seen; an expiry for long-silent groups is not built.
                is_absence
                    || holds
                    || firing
                    || !group.primary.is_empty()
                    || group.long.as_ref().is_some_and(|w| !w.is_empty())
                    || group
                        .readings
                        .as_ref()
                        .is_some_and(|r| !r.samples.is_empty())
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
        | RuleKind::Ratio { window_ms, .. }
        | RuleKind::NearingLimit { window_ms, .. }
        | RuleKind::Absence { window_ms } => (Window::new(*window_ms), None),
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
        last_seen_ms: at_ms,
        readings: None,
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
        RuleKind::NearingLimit {
            window_ms,
            fraction,
            trend_within_ms,
            ..
        } => {
            let Some(readings) = group.readings.as_mut() else {
                return (false, Facts::default());
            };
            readings.prune(now_ms, *window_ms);
            let (Some(&(first_ms, first, _)), Some(&(last_ms, value, limit))) =
                (readings.samples.front(), readings.samples.back())
            else {
                return (false, Facts::default());
            };
            let ratio = value / limit;
            let mut measure = format!(
                "{} of {} ({}%)",
                fmt_number(value),
                fmt_number(limit),
                fmt_number(ratio * 100.0)
            );
            let mut holds = ratio >= fraction * bar;
            // The rise from the oldest reading in the window to the newest, continued.
            if let Some(within_ms) = trend_within_ms
                && last_ms > first_ms
                && value > first
                && value < limit
            {
                let per_ms = (value - first) / (last_ms - first_ms) as f64;
                let eta_ms = ((limit - value) / per_ms).min(i64::MAX as f64 / 2.0) as i64;
                // While firing, the trend may slow a little before the alert resolves.
                if eta_ms as f64 <= *within_ms as f64 / bar {
                    holds = true;
                    measure.push_str(&format!(
                        ", at the current rate the limit is reached in {}",
                        duration_text(eta_ms.max(1000))
                    ));
                }
            }
            (
                holds,
                Facts {
                    count: value,
                    limit: Some(limit),
                    ratio: Some(ratio),
                    measure,
                    ..Facts::default()
                },
            )
        }
        RuleKind::Absence { window_ms } => {
            let silent_ms = now_ms - group.last_seen_ms;
            let measure = format!(
                "no event for {} (expected one within {})",
                duration_text(silent_ms),
                duration_text(*window_ms)
            );
            (
                silent_ms >= *window_ms,
                Facts {
                    count,
                    measure,
                    ..Facts::default()
                },
            )
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

    fn reading(value: f64, limit: Option<f64>) -> Event {
        Event {
            value: Some(value),
            limit,
            ..event("svc.quota", &[("quota", "send")])
        }
    }

    fn nearing(limit: Option<f64>, trend_within_ms: Option<i64>) -> Arc<Rule> {
        rule(
            RuleKind::NearingLimit {
                window_ms: 3_600_000,
                fraction: 0.85,
                limit,
                trend_within_ms,
            },
            &["svc.quota"],
            &["quota"],
        )
    }

    #[test]
    fn nearing_limit_fires_at_the_fraction_and_resolves_below_the_lowered_bar() {
        let mut engine = Engine::new(&[nearing(Some(1000.0), None)]);
        engine.observe(reading(800.0, None), 1_000);
        assert_eq!(holds(&mut engine, 1_000, false), Vec::<bool>::new());
        // The event's own limit wins over the rule's.
        engine.observe(reading(850.0, Some(2000.0)), 2_000);
        assert_eq!(holds(&mut engine, 2_000, false), Vec::<bool>::new());
        engine.observe(reading(860.0, None), 3_000);
        let outcome = engine.evaluate(3_000, false, |_| false).remove(0);
        assert!(outcome.holds);
        assert_eq!(outcome.facts.measure, "860 of 1000 (86%)");
        assert_eq!(outcome.facts.limit, Some(1000.0));
        // Firing: 0.85 * 0.8 = 68% still holds, 60% does not.
        engine.observe(reading(700.0, None), 4_000);
        assert_eq!(holds(&mut engine, 4_000, true), vec![true]);
        engine.observe(reading(600.0, None), 5_000);
        assert_eq!(holds(&mut engine, 5_000, true), vec![false]);
    }

    #[test]
    fn nearing_limit_ignores_events_without_a_value_or_any_limit() {
        let mut engine = Engine::new(&[nearing(None, None)]);
        engine.observe(event("svc.quota", &[("quota", "send")]), 1_000);
        engine.observe(reading(990.0, None), 1_000);
        assert_eq!(holds(&mut engine, 1_000, false), Vec::<bool>::new());
        assert_eq!(engine.group_count(), 0);
        engine.observe(reading(990.0, Some(1000.0)), 2_000);
        assert_eq!(holds(&mut engine, 2_000, false), vec![true]);
    }

    #[test]
    fn nearing_limit_trend_fires_before_the_fraction_is_reached() {
        let mut engine = Engine::new(&[nearing(Some(1000.0), Some(3_600_000))]);
        // 100 per 10 minutes: from 500 at 20 minutes, 1000 is 50 minutes away.
        engine.observe(reading(300.0, None), 0);
        engine.observe(reading(500.0, None), 1_200_000);
        let outcome = engine.evaluate(1_200_000, false, |_| false).remove(0);
        assert!(outcome.holds, "{}", outcome.facts.measure);
        assert_eq!(
            outcome.facts.measure,
            "500 of 1000 (50%), at the current rate the limit is reached in 50m"
        );
        // Flat: no trend, and 50% is below the bar.
        let mut flat = Engine::new(&[nearing(Some(1000.0), Some(3_600_000))]);
        flat.observe(reading(500.0, None), 0);
        flat.observe(reading(500.0, None), 1_200_000);
        assert_eq!(holds(&mut flat, 1_200_000, false), Vec::<bool>::new());
    }

    #[test]
    fn nearing_limit_readings_leave_with_the_window() {
        let mut engine = Engine::new(&[nearing(Some(1000.0), None)]);
        engine.observe(reading(900.0, None), 0);
        assert_eq!(holds(&mut engine, 0, false), vec![true]);
        // An hour later the reading is stale: it no longer says where usage is.
        assert_eq!(holds(&mut engine, 3_600_001, true), vec![false]);
        assert!(engine.evaluate(3_600_002, false, |_| false).is_empty());
        assert_eq!(engine.group_count(), 0);
    }

    fn absence(group_by: &[&str]) -> Arc<Rule> {
        rule(
            RuleKind::Absence {
                window_ms: 3_600_000,
            },
            &["sendgrid.processed"],
            group_by,
        )
    }

    #[test]
    fn absence_without_groups_counts_silence_from_the_first_check() {
        let mut engine = Engine::new(&[absence(&[])]);
        assert_eq!(holds(&mut engine, 10_000, false), Vec::<bool>::new());
        let outcome = engine
            .evaluate(10_000 + 3_600_000, false, |_| false)
            .remove(0);
        assert!(outcome.holds);
        assert_eq!(
            outcome.facts.measure,
            "no event for 1h (expected one within 1h)"
        );
        // The alert stays firing while silent, and resolves on the next event.
        assert_eq!(holds(&mut engine, 20_000_000, true), vec![true]);
        engine.observe(event("sendgrid.processed", &[]), 20_000_001);
        assert_eq!(holds(&mut engine, 20_000_001, true), vec![false]);
        // Silent again for a window: fires again.
        assert_eq!(
            holds(&mut engine, 20_000_001 + 3_600_000, false),
            vec![true]
        );
    }

    #[test]
    fn absence_per_group_fires_for_the_group_that_went_silent() {
        let mut engine = Engine::new(&[absence(&["domain"])]);
        engine.observe(event("sendgrid.processed", &[("domain", "a.com")]), 0);
        engine.observe(event("sendgrid.processed", &[("domain", "b.com")]), 0);
        engine.observe(
            event("sendgrid.processed", &[("domain", "b.com")]),
            3_000_000,
        );
        let outcomes = engine.evaluate(3_600_000, false, |_| false);
        let silent: Vec<_> = outcomes
            .iter()
            .filter(|o| o.holds)
            .map(|o| o.labels["domain"].clone())
            .collect();
        assert_eq!(silent, vec!["a.com".to_string()]);
        // The silent group is kept while it fires, although its window is empty.
        let later = engine.evaluate(7_200_000, false, |_| true);
        assert_eq!(later.iter().filter(|o| o.holds).count(), 2);
    }
}
