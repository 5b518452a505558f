//! The common event every source produces, and the labels rules group by.
//!
//! Sources own the mapping from a provider's payload to an [`Event`]; rules see only this
//! shape. Labels are low-cardinality by contract: a source never puts a full address, URL
//! or free-text reason into a label, only into the raw payload the event keeps.

use std::borrow::Cow;
use std::sync::Arc;

/// Label name and value; both borrowed from static strings where the source knows them,
/// to keep allocations per event down.
pub type Label = (Cow<'static, str>, Cow<'static, str>);

/// One thing a provider reported, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Id of the configured source that received it.
    pub source: Arc<str>,
    /// Dotted kind, provider first: `sendgrid.dropped`.
    pub kind: Cow<'static, str>,
    /// When the provider says it happened, in milliseconds since the epoch.
    pub time_ms: i64,
    /// How much it counts for in a window (1 for most events).
    pub weight: f64,
    /// A measurement the event reports, such as the requests used so far this hour;
    /// `nearing limit` rules compare it with `limit`.
    pub value: Option<f64>,
    /// The limit `value` counts towards, when the event says.
    pub limit: Option<f64>,
    /// Labels sorted by name, so two events with the same labels compare equal. The
    /// `source` label is the `source` field and not stored here.
    pub labels: Vec<Label>,
    /// The provider's own id for the event, when it has one.
    pub provider_id: Option<String>,
    /// A W3C `traceparent` the sender attached, already validated.
    pub traceparent: Option<String>,
    /// The event exactly as the provider sent it (one JSON object); attributes and
    /// passthrough fields are read from here when an alert is rendered.
    pub raw: Box<str>,
}

impl Event {
    /// Value of label `name`, if the event has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        if name == "source" {
            return Some(&self.source);
        }
        self.labels
            .binary_search_by(|(k, _)| k.as_ref().cmp(name))
            .ok()
            .map(|i| self.labels[i].1.as_ref())
    }
}

/// Returns `value` if it is a valid W3C trace context `traceparent` header value.
///
/// Accepts version 00 exactly, and future versions by their common prefix as the
/// specification asks; rejects all-zero trace and span ids.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let is_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !is_hex(version, 2) || version == "ff" || !is_hex(trace_id, 32) || !is_hex(span_id, 16) {
        return None;
    }
    if !is_hex(flags, 2) || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || span_id.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(TraceParent {
        trace_id: trace_id.to_string(),
        span_id: span_id.to_string(),
    })
}

/// The parts of a `traceparent` an alert links with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_cases() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ok).unwrap().trace_id,
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }
}
