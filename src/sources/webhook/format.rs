//! backchannel's own event format: one JSON object, or an array of them, each saying
//! what happened to the sender's client in a shape rules can use directly.
//!
//! Each element is checked on its own: a bad one is skipped with the reason, the others
//! are kept. The limits on labels are refusals rather than truncations, so a sender
//! learns at once that a label would have been cut or would have grown the number of
//! alert groups without bound. Fields this file does not know are kept in the raw event
//! and named in a warning (a typo such as `lables` would otherwise go unnoticed).

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::{Event, Label, parse_traceparent};
use crate::sources::{ParsedBatch, ParsedEvent, SourceError, dedup_key};

/// Most labels one event may carry.
pub const MAX_LABELS: usize = 16;
/// Longest label name, in characters.
pub const MAX_LABEL_NAME: usize = 64;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE: usize = 128;
/// Longest kind, in characters.
pub const MAX_KIND: usize = 128;
/// Longest `id`, in characters.
pub const MAX_ID: usize = 256;
/// The last millisecond of year 9999: later times are mistakes, not events.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

const FIELDS: &[&str] = &[
    "kind",
    "time",
    "weight",
    "value",
    "limit",
    "labels",
    "attributes",
    "id",
    "passthrough",
    "traceparent",
];

/// What the parser needs from the source's settings.
#[derive(Debug, Clone, Default)]
pub struct Format {
    /// Kind prefixes the sender may use (`acme.`); empty allows any dotted kind.
    pub kind_prefixes: Vec<String>,
}

impl Format {
    /// Parses a request body. `received_ms` stands in for a missing `time`.
    pub fn parse(
        &self,
        source: &Arc<str>,
        body: &[u8],
        received_ms: i64,
    ) -> Result<ParsedBatch, SourceError> {
        let text = crate::sources::loose::body_text(body)?;
        let single = match text.trim_start().as_bytes().first() {
            Some(b'{') => true,
            Some(b'[') => false,
            Some(_) => {
                return Err(SourceError::BadRequest(
                    "expected a JSON event object or an array of them".into(),
                ));
            }
            None => return Err(SourceError::BadRequest("empty body".into())),
        };
        let elements: Vec<&RawValue> = if single {
            vec![serde_json::from_str(text).map_err(|e| bad_json(&e))?]
        } else {
            serde_json::from_str(text).map_err(|e| bad_json(&e))?
        };

        let mut batch = ParsedBatch::default();
        for (position, raw) in elements.into_iter().enumerate() {
            match self.parse_event(
                source,
                raw.get(),
                position,
                received_ms,
                &mut batch.warnings,
            ) {
                Ok(parsed) => batch.events.push(parsed),
                Err(reason) if single => {
                    return Err(SourceError::BadRequest(format!(
                        "event is not valid: {reason}"
                    )));
                }
                Err(reason) => batch.skipped.push(format!("event {position}: {reason}")),
            }
        }
        Ok(batch)
    }

    fn parse_event(
        &self,
        source: &Arc<str>,
        raw: &str,
        position: usize,
        received_ms: i64,
        warnings: &mut Vec<String>,
    ) -> Result<ParsedEvent, String> {
        let fields: Map<String, Value> =
            serde_json::from_str(raw).map_err(|_| "not a JSON object".to_string())?;
        for name in fields.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
            warnings.push(format!(
                "event {position}: unknown field {:?} is kept but not used",
                clip(name, 40)
            ));
        }

        let kind = match fields.get("kind") {
            Some(Value::String(kind)) => check_kind(kind)?,
            Some(_) => return Err("\"kind\" is not a string".into()),
            None => return Err("missing \"kind\"".into()),
        };
        if !self.kind_prefixes.is_empty()
            && !self
                .kind_prefixes
                .iter()
                .any(|p| kind.starts_with(p.as_str()))
        {
            return Err(format!(
                "kind {kind:?} does not start with {}",
                self.kind_prefixes.join(" or ")
            ));
        }
        let time_ms = match fields.get("time") {
            None | Some(Value::Null) => received_ms,
            Some(Value::String(text)) => rfc3339_ms(text)
                .ok_or_else(|| format!("\"time\" {:?} is not RFC 3339", clip(text, 40)))?,
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|ms| ms.is_finite() && (0.0..=MAX_TIME_MS as f64).contains(ms))
                .map(|ms| ms as i64)
                .ok_or_else(|| format!("\"time\" {n} is not epoch milliseconds"))?,
            Some(_) => return Err("\"time\" is neither RFC 3339 text nor epoch ms".into()),
        };
        let weight = number(&fields, "weight")?.unwrap_or(1.0);
        if weight < 0.0 {
            return Err(format!("\"weight\" {weight} is negative"));
        }
        let value = number(&fields, "value")?;
        let limit = number(&fields, "limit")?;
        for name in ["attributes", "passthrough"] {
            if !matches!(
                fields.get(name),
                None | Some(Value::Null | Value::Object(_))
            ) {
                return Err(format!("{name:?} is not an object"));
            }
        }
        let labels = match fields.get("labels") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(labels)) => check_labels(labels)?,
            Some(_) => return Err("\"labels\" is not an object".into()),
        };
        let id = match fields.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_ID => {
                Some(id.clone())
            }
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                return Err(format!(
                    "\"id\" is not a string of 1 to {MAX_ID} characters"
                ));
            }
        };
        let traceparent = match fields.get("traceparent") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if parse_traceparent(text).is_some() => {
                Some(text.trim().to_string())
            }
            Some(_) => {
                warnings.push(format!(
                    "event {position}: \"traceparent\" is not a W3C trace context; ignored"
                ));
                None
            }
        };

        // A sender's retry repeats the body byte for byte, so an event without an id
        // is known by its bytes and its place in the body, unless the request names
        // its delivery in `webhook-id` (see `Webhook::request_keys`).
        let keys = match &id {
            Some(id) => dedup_key(source, &["id", &kind, id]),
            None => dedup_key(source, &["body", &position.to_string(), raw]),
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
}

fn bad_json(error: &serde_json::Error) -> SourceError {
    SourceError::BadRequest(format!("body is not JSON: {error}"))
}

/// A kind as the format requires it: lowercase dotted words, at least two of them.
pub fn check_kind(kind: &str) -> Result<String, String> {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    let dotted = kind.split('.').count() >= 2 && kind.split('.').all(word);
    if !dotted || kind.len() > MAX_KIND {
        return Err(format!(
            "kind {:?} is not dotted lowercase words (a-z, 0-9, _ or -) of at most {MAX_KIND} \
             characters, such as \"acme.events.dropped\"",
            clip(kind, 60)
        ));
    }
    Ok(kind.to_string())
}

fn check_labels(labels: &Map<String, Value>) -> Result<Vec<Label>, String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("{} labels, at most {MAX_LABELS}", labels.len()));
    }
    let mut out: Vec<Label> = Vec::with_capacity(labels.len());
    for (name, value) in labels {
        let valid_name = name.len() <= MAX_LABEL_NAME
            && name.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            })
            && !name.is_empty();
        if !valid_name {
            return Err(format!(
                "label name {:?} is not a name of letters, digits and _ of at most \
                 {MAX_LABEL_NAME} characters",
                clip(name, 40)
            ));
        }
        if name == "source" {
            return Err("label \"source\" is reserved for the source id".into());
        }
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => return Err(format!("label {name:?} is not a string")),
        };
        if text.chars().count() > MAX_LABEL_VALUE {
            return Err(format!(
                "label {name:?} is longer than {MAX_LABEL_VALUE} characters; labels group \
                 alerts, so put long text in \"attributes\""
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(format!("label {name:?} holds a control character"));
        }
        out.push((Cow::Owned(name.clone()), Cow::Owned(text)));
    }
    out.sort();
    Ok(out)
}

fn number(fields: &Map<String, Value>, name: &str) -> Result<Option<f64>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64().filter(|f| f.is_finite()) {
            Some(value) => Ok(Some(value)),
            None => Err(format!("{name:?} is not a finite number")),
        },
        Some(_) => Err(format!("{name:?} is not a number")),
    }
}

/// An RFC 3339 time as milliseconds since the epoch, within years 0 to 9999 after
/// the offset is applied.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
        .filter(|ms| (0..=MAX_TIME_MS).contains(ms))
}

/// At most `max` characters of `text`, for quoting a sender's value in a message.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ParsedBatch, SourceError> {
        Format::default().parse(&Arc::from("up"), body.as_bytes(), 1_000)
    }

    #[test]
    fn every_field_of_an_event() {
        let batch = parse(
            r#"{"kind":"acme.quota.nearing","time":"2024-05-01T12:00:00+02:00","weight":2,
            "value":90,"limit":100,"labels":{"plan":"pro","region":"eu","tier":3},
            "attributes":{"detail":"90% of the hourly limit"},"id":"evt_1",
            "passthrough":{"request":"r-7"},
            "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#,
        )
        .unwrap();
        assert!(batch.warnings.is_empty(), "{:?}", batch.warnings);
        let event = &batch.events[0].event;
        assert_eq!(event.kind, "acme.quota.nearing");
        assert_eq!(event.time_ms, 1_714_557_600_000);
        assert_eq!(
            (event.weight, event.value, event.limit),
            (2.0, Some(90.0), Some(100.0))
        );
        let labels: Vec<(&str, &str)> = event
            .labels
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        assert_eq!(labels, [("plan", "pro"), ("region", "eu"), ("tier", "3")]);
        assert_eq!(event.provider_id.as_deref(), Some("evt_1"));
        assert!(event.traceparent.is_some());
        assert!(event.raw.contains("90% of the hourly limit"));
    }

    #[test]
    fn times_are_rfc3339_or_epoch_ms() {
        let batch = parse(
            r#"[{"kind":"a.b","time":1700000000123},{"kind":"a.b"},
            {"kind":"a.b","time":"2023-11-14T22:13:20.5Z"}]"#,
        )
        .unwrap();
        let times: Vec<i64> = batch.events.iter().map(|e| e.event.time_ms).collect();
        assert_eq!(times, [1_700_000_000_123, 1_000, 1_700_000_000_500]);
    }

    /// Each entry: an element and the start of the reason it is skipped for.
    #[test]
    fn bad_elements_are_skipped_with_a_reason() {
        let long = "v".repeat(MAX_LABEL_VALUE + 1);
        let many: String = (0..=MAX_LABELS)
            .map(|i| format!("\"l{i}\":\"x\","))
            .collect();
        let cases = [
            (r#"{"time":1}"#.to_string(), "missing \"kind\""),
            (r#"{"kind":"nodot"}"#.into(), "kind \"nodot\" is not dotted"),
            (
                r#"{"kind":"Acme.Dropped"}"#.into(),
                "kind \"Acme.Dropped\" is not",
            ),
            (r#"{"kind":"a..b"}"#.into(), "kind \"a..b\" is not"),
            (r#"{"kind":7}"#.into(), "\"kind\" is not a string"),
            (
                r#"{"kind":"a.b","time":"yesterday"}"#.into(),
                "\"time\" \"yesterday\"",
            ),
            (r#"{"kind":"a.b","time":-5}"#.into(), "\"time\" -5 is not"),
            (
                r#"{"kind":"a.b","time":"10000-01-01T00:00:00Z"}"#.into(),
                "\"time\"",
            ),
            (
                r#"{"kind":"a.b","weight":-1}"#.into(),
                "\"weight\" -1 is negative",
            ),
            (
                r#"{"kind":"a.b","value":"90%"}"#.into(),
                "\"value\" is not a number",
            ),
            (
                r#"{"kind":"a.b","labels":[]}"#.into(),
                "\"labels\" is not an object",
            ),
            (
                format!(r#"{{"kind":"a.b","labels":{{"x":"{long}"}}}}"#),
                "label \"x\" is longer",
            ),
            (
                format!(r#"{{"kind":"a.b","labels":{{{many}"z":"y"}}}}"#),
                "18 labels",
            ),
            (
                r#"{"kind":"a.b","labels":{"source":"x"}}"#.into(),
                "label \"source\" is reserved",
            ),
            (
                r#"{"kind":"a.b","labels":{"a b":"x"}}"#.into(),
                "label name \"a b\"",
            ),
            (
                r#"{"kind":"a.b","labels":{"x":{"y":1}}}"#.into(),
                "label \"x\" is not a string",
            ),
            (
                r#"{"kind":"a.b","labels":{"x":"a\nb"}}"#.into(),
                "label \"x\" holds a control",
            ),
            (
                r#"{"kind":"a.b","attributes":[1]}"#.into(),
                "\"attributes\" is not an object",
            ),
            (
                r#"{"kind":"a.b","passthrough":"x"}"#.into(),
                "\"passthrough\" is not an object",
            ),
            (r#"{"kind":"a.b","id":""}"#.into(), "\"id\" is not a string"),
            (r#"42"#.into(), "not a JSON object"),
        ];
        for (element, reason) in &cases {
            let body = format!(r#"[{{"kind":"ok.event"}},{element}]"#);
            let batch = parse(&body).unwrap();
            assert_eq!(batch.events.len(), 1, "{element}");
            assert!(
                batch.skipped[0].starts_with(&format!("event 1: {reason}")),
                "{element}: {:?}",
                batch.skipped
            );
        }
        let single = parse(r#"{"kind":"nodot"}"#).unwrap_err();
        assert!(
            single.to_string().starts_with("event is not valid: kind"),
            "{single}"
        );
    }

    #[test]
    fn unknown_fields_and_bad_traceparents_are_warnings() {
        let batch = parse(r#"{"kind":"a.b","lables":{"x":"y"},"traceparent":"junk"}"#).unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.warnings.len(), 2, "{:?}", batch.warnings);
        assert!(batch.warnings[0].contains("\"lables\""));
        assert!(batch.events[0].event.traceparent.is_none());
    }

    #[test]
    fn kind_prefixes_bind_a_sender_to_its_own_kinds() {
        let format = Format {
            kind_prefixes: vec!["acme.".into()],
        };
        let body = br#"[{"kind":"acme.dropped"},{"kind":"sendgrid.dropped"}]"#;
        let batch = format.parse(&Arc::from("up"), body, 0).unwrap();
        assert_eq!(batch.events.len(), 1);
        assert!(
            batch.skipped[0].contains("does not start with acme."),
            "{:?}",
            batch.skipped
        );
    }

    #[test]
    fn dedup_keys_follow_ids_then_bytes() {
        let body = br#"[{"kind":"a.b","id":"1"},{"kind":"a.b","id":"1"},{"kind":"a.c","id":"1"},
            {"kind":"a.b"},{"kind":"a.b"}]"#;
        let batch = Format::default().parse(&Arc::from("up"), body, 0).unwrap();
        let keys: Vec<i64> = batch.events.iter().map(|e| e.keys.unwrap()).collect();
        assert_eq!(keys[0], keys[1], "same id and kind");
        assert_ne!(keys[0], keys[2], "same id, other kind");
        assert_ne!(keys[3], keys[4], "same bytes at another position");
        let again = Format::default().parse(&Arc::from("up"), body, 99).unwrap();
        let keys_again: Vec<i64> = again.events.iter().map(|e| e.keys.unwrap()).collect();
        assert_eq!(keys, keys_again, "a redelivery has the same keys");
    }

    #[test]
    fn whole_body_errors() {
        for body in [
            "",
            "  ",
            "\"x\"",
            "[{\"kind\":",
            "{\"kind\":\"a.b\"} x",
            "null",
        ] {
            assert!(parse(body).is_err(), "{body:?}");
        }
        let invalid = Format::default().parse(&Arc::from("up"), b"[{\"kind\":\"a.\xff\"}]", 0);
        assert!(matches!(invalid, Err(SourceError::BadRequest(m)) if m.contains("UTF-8")));
    }
}
