//! Rules: which events count, over which window, and when a group's condition holds.
//!
//! This module knows windows and arithmetic only. Whether a condition that holds is a
//! new alert, a repeat or nothing is decided in `alerts`; nothing here stores or sends.

pub mod engine;
pub mod window;

pub use engine::{Engine, GroupOutcome};

use std::collections::BTreeMap;

use crate::event::Event;

/// How loud an alert is; routes match on it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which events a rule looks at.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// Event kinds, any of (a trailing `*` matches by prefix); empty matches every kind.
    pub kinds: Vec<String>,
    /// Source ids, any of; empty matches every source.
    pub sources: Vec<String>,
    /// Label name to accepted values (any of).
    pub labels: Vec<(String, Vec<String>)>,
    /// Label name to a pattern the value must match.
    pub label_patterns: Vec<(String, regex_lite::Regex)>,
}

impl Matcher {
    pub fn matches(&self, event: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| kind_matches(k, &event.kind)))
            && (self.sources.is_empty() || self.sources.iter().any(|s| **s == *event.source))
            && self.labels.iter().all(|(name, values)| {
                event
                    .label(name)
                    .is_some_and(|v| values.iter().any(|x| x == v))
            })
            && self
                .label_patterns
                .iter()
                .all(|(name, pattern)| event.label(name).is_some_and(|v| pattern.is_match(v)))
    }
}

/// A kind in a matcher: exact, or a prefix ending in `*` (`csp.*`, `browser.*`).
pub fn kind_matches(wanted: &str, kind: &str) -> bool {
    match wanted.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => wanted == kind,
    }
}

/// The condition a rule checks, with its parameters.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// Every matching event; the alert resolves after `window_ms` without one.
    Each { window_ms: i64 },
    /// Matching weight within `window_ms` reaches `min`.
    Threshold { window_ms: i64, min: f64 },
    /// Matching weight over `base` weight within `window_ms` reaches `min_ratio`, with at
    /// least `min_base` of base. Base is grouped by `base_group_by`, a subset of the
    /// rule's `group_by`, since base events often lack the grouped label (a drop reason).
    Ratio {
        window_ms: i64,
        base: Matcher,
        base_group_by: Vec<String>,
        min_ratio: f64,
        min_base: f64,
    },
    /// Weight within `window_ms` reaches `factor` times what the preceding `baseline_ms`
    /// predicts for a window that long, and at least `min_count`.
    Jump {
        window_ms: i64,
        baseline_ms: i64,
        factor: f64,
        min_count: f64,
    },
    /// The latest reported value within `window_ms` reaches `fraction` of its limit (the
    /// event's own, else `limit`), or, with `trend_within_ms`, the rise over the window
    /// continued at its rate would reach the limit within that long.
    NearingLimit {
        window_ms: i64,
        fraction: f64,
        limit: Option<f64>,
        trend_within_ms: Option<i64>,
    },
    /// No matching event for `window_ms`. With no `group_by`, silence since the rule
    /// was first evaluated counts too; with `group_by`, a group exists once it has had
    /// an event, and stays firing until its events return.
    Absence { window_ms: i64 },
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub matcher: Matcher,
    pub group_by: Vec<String>,
    pub severity: Severity,
    /// Handlebars template for the one-line summary.
    pub summary: String,
    /// Handlebars template for the longer description; may be empty.
    pub description: String,
    /// A firing alert resolves only once its measure falls below this fraction of the
    /// firing threshold (hysteresis against flapping at the edge).
    pub resolve_ratio: f64,
}

impl Rule {
    /// How far back this rule needs events to rebuild its windows.
    pub fn lookback_ms(&self) -> i64 {
        match &self.kind {
            RuleKind::Each { window_ms }
            | RuleKind::Threshold { window_ms, .. }
            | RuleKind::Ratio { window_ms, .. }
            | RuleKind::NearingLimit { window_ms, .. }
            | RuleKind::Absence { window_ms } => *window_ms,
            RuleKind::Jump {
                window_ms,
                baseline_ms,
                ..
            } => window_ms + baseline_ms,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            RuleKind::Each { .. } => "each",
            RuleKind::Threshold { .. } => "threshold",
            RuleKind::Ratio { .. } => "ratio",
            RuleKind::Jump { .. } => "jump",
            RuleKind::NearingLimit { .. } => "nearing_limit",
            RuleKind::Absence { .. } => "absence",
        }
    }
}

/// What a rule measured for one group at one instant; templates see these fields.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Facts {
    /// Matching weight in the window.
    #[serde(serialize_with = "as_written")]
    pub count: f64,
    /// Base weight in the window (ratio rules).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_written_opt"
    )]
    pub base: Option<f64>,
    /// `count / base` (ratio rules), as a fraction.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_written_opt"
    )]
    pub ratio: Option<f64>,
    /// The limit a value is compared with (nearing-limit rules).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_written_opt"
    )]
    pub limit: Option<f64>,
    /// What the baseline predicts for the window (jump rules).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_written_opt"
    )]
    pub expected: Option<f64>,
    /// Human wording of the measure: "7 vs 0 expected (new activity)".
    pub measure: String,
}

/// Serialises whole numbers as integers, so templates show `3`, not `3.0`.
fn as_written<S: serde::Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 9.0e15 {
        serializer.serialize_i64(*value as i64)
    } else {
        serializer.serialize_f64(*value)
    }
}

fn as_written_opt<S: serde::Serializer>(
    value: &Option<f64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => as_written(v, serializer),
        None => serializer.serialize_none(),
    }
}

/// Whether a jump rule's condition holds: `current` reaches `factor` times `expected`
/// (inclusive) and at least `min_count`. A zero baseline is "new activity" once
/// `min_count` is reached, never a division by zero.
pub fn jump_holds(current: f64, expected: f64, factor: f64, min_count: f64) -> bool {
    current >= min_count && current > 0.0 && current >= factor * expected
}

/// Wording of a jump measure for summaries, free of NaN and infinity.
pub fn jump_measure(current: f64, expected: f64) -> String {
    if expected <= 0.0 {
        format!("new activity: {} vs 0", fmt_number(current))
    } else {
        format!(
            "{} vs {} expected ({}x)",
            fmt_number(current),
            fmt_number(expected),
            fmt_number(current / expected)
        )
    }
}

/// A number as people write it: integers without decimals, others with up to two.
pub fn fmt_number(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_string();
    }
    if (value - value.round()).abs() < 1e-9 {
        format!("{}", value.round() as i64)
    } else {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The labels identifying a group, from the event's values for `group_by`; a missing
/// label groups under the empty string.
pub fn group_labels(group_by: &[String], event: &Event) -> BTreeMap<String, String> {
    group_by
        .iter()
        .map(|name| {
            (
                name.clone(),
                event.label(name).unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field case B28: a jump rule on an empty reference window.
    #[test]
    fn b28_jump_on_zero_baseline() {
        let cases = [
            (0.0, 0.0, false),
            (0.0, 1.0, false),
            (0.0, 7.0, true),
            (10.0, 20.0, true),
            (10.0, 19.0, false),
        ];
        for (reference, current, expected) in cases {
            assert_eq!(
                jump_holds(current, reference, 2.0, 5.0),
                expected,
                "ref={reference} cur={current}"
            );
        }
        let text = jump_measure(7.0, 0.0);
        assert_eq!(text, "new activity: 7 vs 0");
        for word in ["NaN", "inf"] {
            assert!(!text.contains(word));
        }
        assert_eq!(jump_measure(20.0, 10.0), "20 vs 10 expected (2x)");
    }

    #[test]
    fn numbers_read_as_written() {
        assert_eq!(fmt_number(3.0), "3");
        assert_eq!(fmt_number(0.25), "0.25");
        assert_eq!(fmt_number(12.5), "12.5");
        assert_eq!(fmt_number(f64::NAN), "0");
    }
}
