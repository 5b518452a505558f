//! Any JSON webhook into common events, by a configured map of JSON pointers (RFC 6901).
//!
//! The map is part of the source's config, so a body journaled under one map is parsed
//! again under the same map after a restart; changing the map changes what old bodies
//! mean, as changing a rule changes what old events count for.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use crate::event::{Event, Label, parse_traceparent};
use crate::sources::webhook::format::{MAX_TIME_MS, check_kind, clip, rfc3339_ms};
use crate::sources::{ParsedBatch, ParsedEvent, SourceError, dedup_key};

/// Longest label value kept, in characters; longer values are cut with `…`.
pub const MAX_LABEL_VALUE: usize = 128;
/// Longest text a kind placeholder contributes.
const MAX_KIND_WORD: usize = 40;

/// One piece of a kind template: `mailgun.{/event-data/event}` is a literal and a
/// pointer.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Literal(String),
    Pointer(String),
}

/// How a number in the time field counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeUnit {
    Seconds,
    Millis,
    /// Seconds below 10^11 (year 5138), milliseconds above: what senders mean.
    Guess,
}

/// A checked mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub kind: Vec<Piece>,
    /// Pointers tried in order; the first that holds a value is the time (Postmark
    /// names it after the record type: `BouncedAt`, `DeliveredAt`, ...).
    pub time: Vec<String>,
    pub time_unit: TimeUnit,
    /// Pointers tried in order; the first that holds a value is the dedup id.
    pub id: Vec<String>,
    /// Sorted by label name.
    pub labels: Vec<(String, String)>,
    pub weight: Option<String>,
    pub value: Option<String>,
    pub limit: Option<String>,
    pub traceparent: Option<String>,
    /// Pointer to the array of items in a body that holds several.
    pub events: Option<String>,
}

impl Mapping {
    /// Parses a request body. `received_ms` stands in for a missing time.
    pub fn parse(
        &self,
        source: &Arc<str>,
        body: &[u8],
        received_ms: i64,
    ) -> Result<ParsedBatch, SourceError> {
        let text = crate::sources::loose::body_text(body)?;
        if text.trim().is_empty() {
            return Err(SourceError::BadRequest("empty body".into()));
        }
        let document: Value = serde_json::from_str(text)
            .map_err(|e| SourceError::BadRequest(format!("body is not JSON: {e}")))?;
        let items: Vec<&Value> = match (&self.events, &document) {
            (Some(pointer), _) => match document.pointer(pointer) {
                Some(Value::Array(items)) => items.iter().collect(),
                _ => {
                    return Err(SourceError::BadRequest(format!(
                        "expected an array of events at {pointer}"
                    )));
                }
            },
            (None, Value::Array(items)) => items.iter().collect(),
            (None, Value::Object(_)) => vec![&document],
            (None, _) => {
                return Err(SourceError::BadRequest(
                    "expected a JSON object or an array of them".into(),
                ));
            }
        };

        let mut batch = ParsedBatch::default();
        for (position, item) in items.into_iter().enumerate() {
            match self.item(source, item, position, received_ms, &mut batch.warnings) {
                Ok(parsed) => batch.events.push(parsed),
                Err(reason) => batch.skipped.push(format!("event {position}: {reason}")),
            }
        }
        Ok(batch)
    }

    fn item(
        &self,
        source: &Arc<str>,
        item: &Value,
        position: usize,
        received_ms: i64,
        warnings: &mut Vec<String>,
    ) -> Result<ParsedEvent, String> {
        if !item.is_object() {
            return Err("not a JSON object".into());
        }
        let mut kind = String::new();
        for piece in &self.kind {
            match piece {
                Piece::Literal(text) => kind.push_str(text),
                Piece::Pointer(pointer) => {
                    let word = item
                        .pointer(pointer)
                        .and_then(scalar_text)
                        .map(|t| kind_word(&t))
                        .filter(|w| !w.is_empty())
                        .ok_or_else(|| format!("no kind at {pointer}"))?;
                    kind.push_str(&word);
                }
            }
        }
        let kind = check_kind(&kind)?;

        let found = self
            .time
            .iter()
            .find_map(|p| item.pointer(p).filter(|v| !v.is_null()));
        let time_ms = match found.map(|v| self.time_of(v)) {
            _ if self.time.is_empty() => received_ms,
            Some(Some(ms)) => ms,
            _ => {
                warnings.push(format!(
                    "event {position}: no readable time at {}; the time it arrived is used",
                    self.time.join(" or ")
                ));
                received_ms
            }
        };
        let number_at = |pointer: &Option<String>, name: &str| -> Result<Option<f64>, String> {
            let Some(pointer) = pointer else {
                return Ok(None);
            };
            match item.pointer(pointer) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => number(value)
                    .map(Some)
                    .ok_or_else(|| format!("{name} at {pointer} is not a number")),
            }
        };
        let weight = number_at(&self.weight, "weight")?.unwrap_or(1.0);
        if weight < 0.0 {
            return Err(format!("weight {weight} is negative"));
        }
        let value = number_at(&self.value, "value")?;
        let limit = number_at(&self.limit, "limit")?;

        let mut labels: Vec<Label> = Vec::with_capacity(self.labels.len());
        for (name, pointer) in &self.labels {
            if let Some(text) = item.pointer(pointer).and_then(scalar_text)
                && let Some(text) = label_value(&text)
            {
                labels.push((Cow::Owned(name.clone()), Cow::Owned(text)));
            }
        }

        let id = self
            .id
            .iter()
            .find_map(|pointer| item.pointer(pointer).and_then(scalar_text))
            .filter(|id| !id.is_empty());
        let traceparent = self
            .traceparent
            .as_ref()
            .and_then(|p| item.pointer(p))
            .and_then(Value::as_str)
            .filter(|t| parse_traceparent(t).is_some())
            .map(|t| t.trim().to_string());
        let raw = serde_json::to_string(item).map_err(|e| e.to_string())?;
        // A provider retrying a delivery sends the same item, so an item without an id
        // is known by its content and its place in the body.
        let keys = match &id {
            Some(id) => dedup_key(source, &["id", &kind, id]),
            None => dedup_key(source, &["body", &position.to_string(), &raw]),
        };
        Ok(ParsedEvent {
            position: position as u32,
            event: Event {
                source: source.clone(),
                kind: Cow::Owned(kind),
                time_ms,
                weight,
                value,
                limit,
                labels,
                provider_id: id,
                traceparent,
                raw: raw.into(),
            },
            keys: Some(keys),
        })
    }

    fn time_of(&self, value: &Value) -> Option<i64> {
        let from_number = |n: f64| {
            let ms = match self.time_unit {
                TimeUnit::Millis => n,
                TimeUnit::Seconds => n * 1000.0,
                TimeUnit::Guess if n.abs() >= 1e11 => n,
                TimeUnit::Guess => n * 1000.0,
            };
            (ms.is_finite() && (0.0..=MAX_TIME_MS as f64).contains(&ms)).then_some(ms as i64)
        };
        match value {
            Value::Number(n) => n.as_f64().and_then(from_number),
            Value::String(text) => match text.trim().parse::<f64>() {
                Ok(n) => from_number(n),
                Err(_) => rfc3339_ms(text),
            },
            _ => None,
        }
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

/// A provider's word as part of a kind: `SpamComplaint` → `spam_complaint`,
/// `hard bounce` → `hard_bounce`.
pub fn kind_word(text: &str) -> String {
    let mut out = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let word = out.trim_matches('_');
    clip(word, MAX_KIND_WORD).trim_end_matches('…').to_string()
}

/// A value fit to be a label: an address becomes its domain (a label never holds an
/// address), control characters become spaces, and long text is cut. `None` when
/// nothing is left.
pub fn label_value(text: &str) -> Option<String> {
    let text = text.trim();
    let text = match text.rsplit_once('@') {
        Some((_, domain)) => {
            let domain = domain.trim().trim_end_matches(['.', '>']).to_lowercase();
            let plausible = domain.contains('.')
                && domain
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
            if !plausible {
                return None;
            }
            domain
        }
        None => text.to_string(),
    };
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.is_empty() {
        return None;
    }
    Some(if clean.chars().count() > MAX_LABEL_VALUE {
        let cut: String = clean.chars().take(MAX_LABEL_VALUE - 1).collect();
        format!("{cut}…")
    } else {
        clean
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        Mapping {
            kind: vec![
                Piece::Literal("shop.".into()),
                Piece::Pointer("/type".into()),
            ],
            time: vec!["/at".into(), "/at2".into()],
            time_unit: TimeUnit::Guess,
            id: vec!["/id".into(), "/alt_id".into()],
            labels: vec![
                ("domain".into(), "/to".into()),
                ("plan".into(), "/account/plan".into()),
            ],
            weight: None,
            value: Some("/used".into()),
            limit: Some("/quota".into()),
            traceparent: Some("/trace".into()),
            events: None,
        }
    }

    fn parse(mapping: &Mapping, body: &str) -> Result<ParsedBatch, SourceError> {
        mapping.parse(&Arc::from("shop"), body.as_bytes(), 5_000)
    }

    #[test]
    fn pointers_fill_every_field() {
        let batch = parse(
            &mapping(),
            r#"{"type":"QuotaWarning","at":1700000000,"id":17,"to":"Ops <ops@Shop.Example>",
            "account":{"plan":"pro"},"used":"90","quota":100,
            "trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#,
        )
        .unwrap();
        let event = &batch.events[0].event;
        assert_eq!(event.kind, "shop.quota_warning");
        assert_eq!(event.time_ms, 1_700_000_000_000);
        assert_eq!(event.provider_id.as_deref(), Some("17"));
        assert_eq!(event.label("domain"), Some("shop.example"));
        assert_eq!(event.label("plan"), Some("pro"));
        assert_eq!((event.value, event.limit), (Some(90.0), Some(100.0)));
        assert!(event.traceparent.is_some());
    }

    #[test]
    fn times_in_seconds_milliseconds_or_rfc3339() {
        let mapping = mapping();
        let rows = [
            ("1534110422.389832", 1_534_110_422_389),
            ("1700000000123", 1_700_000_000_123),
            ("\"1700000000\"", 1_700_000_000_000),
            ("\"2016-04-27T16:28:50.3963933-04:00\"", 1_461_788_930_396),
            ("\"whenever\"", 5_000),
            ("-1", 5_000),
            ("null", 5_000),
        ];
        for (time, expected) in rows {
            let batch = parse(&mapping, &format!(r#"{{"type":"x","at":{time}}}"#)).unwrap();
            assert_eq!(batch.events[0].event.time_ms, expected, "{time}");
        }
        let second = parse(&mapping, r#"{"type":"x","at":null,"at2":1700000000}"#).unwrap();
        assert_eq!(
            second.events[0].event.time_ms, 1_700_000_000_000,
            "the next pointer"
        );
        assert!(second.warnings.is_empty());
        let unread = parse(&mapping, r#"{"type":"x","at":"soon"}"#).unwrap();
        assert_eq!(
            unread.warnings,
            ["event 0: no readable time at /at or /at2; the time it \
                                      arrived is used"]
        );
        let seconds = Mapping {
            time_unit: TimeUnit::Seconds,
            ..mapping.clone()
        };
        let batch = parse(&seconds, r#"{"type":"x","at":1700000000123}"#).unwrap();
        assert_eq!(
            batch.events[0].event.time_ms, 5_000,
            "past year 9999 as seconds"
        );
    }

    #[test]
    fn items_from_an_events_pointer_or_a_top_level_array() {
        let nested = Mapping {
            events: Some("/data/items".into()),
            ..mapping()
        };
        let body = r#"{"data":{"items":[{"type":"a"},{"nope":1},{"type":"b","id":"x"},3]}}"#;
        let batch = parse(&nested, body).unwrap();
        let kinds: Vec<&str> = batch.events.iter().map(|e| e.event.kind.as_ref()).collect();
        assert_eq!(kinds, ["shop.a", "shop.b"]);
        assert_eq!(
            batch.skipped,
            ["event 1: no kind at /type", "event 3: not a JSON object"]
        );
        assert!(parse(&nested, r#"{"data":{}}"#).is_err());
        let top = parse(&mapping(), r#"[{"type":"a"},{"type":"a"}]"#).unwrap();
        assert_eq!(top.events.len(), 2);
        assert_ne!(
            top.events[0].keys, top.events[1].keys,
            "position tells them apart"
        );
    }

    #[test]
    fn bad_numbers_skip_and_bad_bodies_refuse() {
        let batch = parse(&mapping(), r#"[{"type":"a","used":"lots"},{"type":"a"}]"#).unwrap();
        assert_eq!(batch.skipped, ["event 0: value at /used is not a number"]);
        for body in ["", "3", "\"x\"", "{", "{} {}"] {
            assert!(parse(&mapping(), body).is_err(), "{body:?}");
        }
        let invalid = mapping().parse(&Arc::from("shop"), b"{\"type\":\"\xff\"}", 0);
        assert!(matches!(invalid, Err(SourceError::BadRequest(m)) if m.contains("UTF-8")));
    }

    #[test]
    fn words_and_label_values() {
        assert_eq!(kind_word("SpamComplaint"), "spam_complaint");
        assert_eq!(kind_word("HardBounce"), "hard_bounce");
        assert_eq!(kind_word("failed"), "failed");
        assert_eq!(kind_word("list unsubscribe!"), "list_unsubscribe");
        assert_eq!(kind_word("***"), "");
        assert_eq!(
            label_value("x@Example.COM.").as_deref(),
            Some("example.com")
        );
        assert_eq!(label_value("x@<!channel>"), None);
        assert_eq!(label_value("  ").as_deref(), None);
        assert_eq!(label_value("a\tb").as_deref(), Some("a b"));
        let long = label_value(&"y".repeat(500)).unwrap();
        assert_eq!(long.chars().count(), MAX_LABEL_VALUE);
    }
}
