//! Alertmanager webhook notifications (payload version 4) into common events.
//!
//! A notification is one alert group: an envelope (`receiver`, `groupKey`, `externalURL`,
//! …) and its `alerts`. Each alert becomes one event, `alertmanager.firing` or
//! `alertmanager.resolved`. Alertmanager sends an alert again with every notification
//! of its group until it resolves, so the dedup key is the alert's identity and state
//! (fingerprint, start, status, end), never the notification.
//!
//! Only allow-listed alert labels become event labels: Prometheus labels such as
//! `instance` or `pod` are one value per target, and a rule grouping by them would
//! make one alert group per target. All labels and annotations stay in the raw event.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::{Event, Label, parse_traceparent};
use crate::sources::{ParsedBatch, ParsedEvent, SourceError, dedup_key};

/// Longest label value kept, in characters; longer values are cut with `…`.
pub const MAX_LABEL_VALUE: usize = 128;

pub const FIRING: &str = "alertmanager.firing";
pub const RESOLVED: &str = "alertmanager.resolved";

/// Envelope members copied into each alert's raw event, so templates can say which
/// receiver and Alertmanager an alert came through.
const ENVELOPE: &[&str] = &["receiver", "externalURL", "groupKey", "groupLabels"];

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    version: Option<&'a RawValue>,
    #[serde(borrow)]
    alerts: Option<&'a RawValue>,
    #[serde(borrow, rename = "externalURL")]
    external_url: Option<&'a RawValue>,
    #[serde(borrow)]
    receiver: Option<&'a RawValue>,
    #[serde(borrow, rename = "groupKey")]
    group_key: Option<&'a RawValue>,
    #[serde(borrow, rename = "groupLabels")]
    group_labels: Option<&'a RawValue>,
}

/// Parses a notification body. `labels` is the sorted allow-list of alert label names
/// that become event labels; `received_ms` stands in for unreadable times.
pub fn parse_notification(
    source: &Arc<str>,
    labels: &[String],
    body: &[u8],
    received_ms: i64,
) -> Result<ParsedBatch, SourceError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        SourceError::BadRequest(format!("body is not UTF-8 (byte {})", e.valid_up_to()))
    })?;
    if text.trim().is_empty() {
        return Err(SourceError::BadRequest("empty body".into()));
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| {
        SourceError::BadRequest(format!("expected an Alertmanager notification object: {e}"))
    })?;
    let alerts: Vec<&RawValue> = envelope
        .alerts
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .ok_or_else(|| {
            SourceError::BadRequest(
                "expected an Alertmanager notification with an \"alerts\" array".into(),
            )
        })?;

    let mut batch = ParsedBatch::default();
    match envelope
        .version
        .map(|v| serde_json::from_str::<Value>(v.get()))
    {
        None | Some(Ok(Value::Null)) => {}
        Some(Ok(Value::String(v))) if v == "4" => {}
        Some(other) => batch.warnings.push(format!(
            "payload version {} is not 4; read as version 4",
            other.map_or_else(|_| "?".to_string(), |v| v.to_string())
        )),
    }
    let envelope_fields = [
        envelope.receiver,
        envelope.external_url,
        envelope.group_key,
        envelope.group_labels,
    ];
    for (position, alert) in alerts.into_iter().enumerate() {
        let context = Context {
            source,
            labels,
            envelope: &envelope_fields,
            received_ms,
            position,
        };
        match context.alert(alert.get(), &mut batch.warnings) {
            Ok(parsed) => batch.events.push(parsed),
            Err(reason) => batch.skipped.push(format!("alert {position}: {reason}")),
        }
    }
    Ok(batch)
}

struct Context<'a> {
    source: &'a Arc<str>,
    labels: &'a [String],
    envelope: &'a [Option<&'a RawValue>; 4],
    received_ms: i64,
    position: usize,
}

impl Context<'_> {
    fn alert(&self, raw: &str, warnings: &mut Vec<String>) -> Result<ParsedEvent, String> {
        let mut alert: Map<String, Value> =
            serde_json::from_str(raw).map_err(|_| "not a JSON object".to_string())?;
        let Some(Value::Object(alert_labels)) = alert.get("labels") else {
            return Err("no \"labels\" object".into());
        };
        let starts = text_field(&alert, "startsAt");
        let ends = text_field(&alert, "endsAt");
        let starts_ms = starts.and_then(time_ms);
        let ends_ms = ends.and_then(time_ms);
        let status = text_field(&alert, "status");
        let resolved = match status {
            Some("resolved") => true,
            Some("firing") => false,
            // Older Alertmanagers send no per-alert status: an alert whose end has
            // passed is resolved, and a zero or future end means it still fires.
            other => {
                if let Some(other) = other {
                    warnings.push(format!(
                        "alert {}: status {:?} is neither firing nor resolved; read from endsAt",
                        self.position,
                        clip(other)
                    ));
                }
                ends_ms.is_some_and(|end| end <= self.received_ms)
            }
        };
        let (kind, state) = if resolved {
            (RESOLVED, "resolved")
        } else {
            (FIRING, "firing")
        };
        let time_ms = if resolved { ends_ms } else { starts_ms }.unwrap_or(self.received_ms);

        let mut labels: Vec<Label> = Vec::new();
        for name in self.labels {
            let Some(value) = alert_labels.get(name).and_then(scalar_text) else {
                continue;
            };
            let (value, cut) = label_value(&value);
            if cut {
                warnings.push(format!(
                    "alert {}: label {name:?} cut to {MAX_LABEL_VALUE} characters",
                    self.position
                ));
            }
            labels.push((Cow::Owned(name.clone()), Cow::Owned(value)));
        }

        let fingerprint = text_field(&alert, "fingerprint")
            .filter(|f| !f.is_empty())
            .map(str::to_string);
        // Without a fingerprint (Alertmanager before 0.19) the alert is known by its
        // whole label set, as Alertmanager itself identifies alerts.
        let mut identity: Vec<String> = match &fingerprint {
            Some(fingerprint) => vec!["fingerprint".into(), fingerprint.clone()],
            None => {
                let mut pairs: Vec<(&String, String)> = alert_labels
                    .iter()
                    .map(|(k, v)| (k, scalar_text(v).unwrap_or_default()))
                    .collect();
                pairs.sort();
                let mut parts = vec!["labels".to_string()];
                for (name, value) in pairs {
                    parts.push(name.clone());
                    parts.push(value);
                }
                parts
            }
        };
        identity.extend([
            starts.unwrap_or_default().to_string(),
            state.to_string(),
            ends.unwrap_or_default().to_string(),
        ]);
        let parts: Vec<&str> = identity.iter().map(String::as_str).collect();
        let keys = Some(dedup_key(self.source, &parts));

        let traceparent = match alert.get("annotations") {
            Some(Value::Object(annotations)) => annotations
                .get("traceparent")
                .and_then(Value::as_str)
                .filter(|t| parse_traceparent(t).is_some())
                .map(|t| t.trim().to_string()),
            _ => None,
        };

        for (name, value) in ENVELOPE.iter().zip(self.envelope) {
            if let Some(value) = value
                && !alert.contains_key(*name)
                && let Ok(value) = serde_json::from_str::<Value>(value.get())
            {
                alert.insert(name.to_string(), value);
            }
        }
        let raw = serde_json::to_string(&alert).map_err(|e| e.to_string())?;
        Ok(ParsedEvent {
            position: self.position as u32,
            event: Event {
                source: self.source.clone(),
                kind: Cow::Borrowed(kind),
                time_ms,
                weight: 1.0,
                value: None,
                limit: None,
                labels,
                provider_id: fingerprint,
                traceparent,
                raw: raw.into(),
            },
            keys,
        })
    }
}

fn text_field<'m>(map: &'m Map<String, Value>, name: &str) -> Option<&'m str> {
    map.get(name).and_then(Value::as_str)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A label value without control characters, cut to `MAX_LABEL_VALUE` characters;
/// whether it was cut.
fn label_value(text: &str) -> (String, bool) {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match clean.char_indices().nth(MAX_LABEL_VALUE - 1) {
        Some((end, _)) if clean.chars().count() > MAX_LABEL_VALUE => {
            (format!("{}…", &clean[..end]), true)
        }
        _ => (clean, false),
    }
}

/// An RFC 3339 time in milliseconds; `None` for Go's zero time (year 1, which
/// Alertmanager sends as "no end yet"), for anything before 1970 and for nonsense.
fn time_ms(text: &str) -> Option<i64> {
    crate::sources::webhook::format::rfc3339_ms(text)
}

fn clip(text: &str) -> Cow<'_, str> {
    crate::sources::webhook::format::clip(text, 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        super::super::DEFAULT_LABELS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn parse(body: &str, received_ms: i64) -> ParsedBatch {
        parse_notification(&Arc::from("am"), &labels(), body.as_bytes(), received_ms).unwrap()
    }

    fn alert(status: &str, fingerprint: &str, starts: &str, ends: &str) -> String {
        format!(
            r#"{{"version":"4","receiver":"bc","status":"{status}","alerts":[{{
            "status":"{status}","labels":{{"alertname":"DiskFull","instance":"db1:9100",
            "severity":"critical","job":"node"}},"annotations":{{"summary":"disk 99% full"}},
            "startsAt":"{starts}","endsAt":"{ends}","fingerprint":"{fingerprint}"}}]}}"#
        )
    }

    const ZERO: &str = "0001-01-01T00:00:00Z";

    #[test]
    fn firing_and_resolved_alerts() {
        let firing = parse(&alert("firing", "f1", "2024-01-01T00:00:00Z", ZERO), 0);
        let event = &firing.events[0].event;
        assert_eq!(event.kind, FIRING);
        assert_eq!(event.time_ms, 1_704_067_200_000);
        assert_eq!(event.label("alertname"), Some("DiskFull"));
        assert_eq!(event.label("severity"), Some("critical"));
        assert_eq!(event.label("instance"), None, "not on the allow-list");
        assert_eq!(event.provider_id.as_deref(), Some("f1"));
        let raw: Value = serde_json::from_str(&event.raw).unwrap();
        assert_eq!(raw["annotations"]["summary"], "disk 99% full");
        assert_eq!(raw["labels"]["instance"], "db1:9100");
        assert_eq!(
            raw["receiver"], "bc",
            "the envelope's receiver is copied in"
        );

        let resolved = parse(
            &alert(
                "resolved",
                "f1",
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:05:00Z",
            ),
            0,
        );
        assert_eq!(resolved.events[0].event.kind, RESOLVED);
        assert_eq!(resolved.events[0].event.time_ms, 1_704_067_500_000);
        assert_ne!(firing.events[0].keys, resolved.events[0].keys);
    }

    /// Each row: per-alert status (or none), endsAt, and whether the alert is resolved
    /// when received at 2024-01-01T01:00:00Z.
    #[test]
    fn status_comes_from_status_then_from_ends_at() {
        let received = 1_704_070_800_000;
        let rows = [
            (Some("firing"), ZERO, false),
            (Some("resolved"), "2024-01-01T00:30:00Z", true),
            (None, ZERO, false),
            (None, "2024-01-01T00:30:00Z", true),
            (None, "2024-01-01T02:00:00Z", false),
            (Some("pending"), "2024-01-01T00:30:00Z", true),
            (None, "not a time", false),
        ];
        for (status, ends, resolved) in rows {
            let status = status.map_or(String::new(), |s| format!(r#""status":"{s}","#));
            let body = format!(
                r#"{{"alerts":[{{{status}"labels":{{"alertname":"X"}},
                "startsAt":"2024-01-01T00:00:00Z","endsAt":"{ends}"}}]}}"#
            );
            let batch = parse(&body, received);
            let expected = if resolved { RESOLVED } else { FIRING };
            assert_eq!(batch.events[0].event.kind, expected, "{status} {ends}");
        }
    }

    #[test]
    fn dedup_keys_follow_the_alert_not_the_notification() {
        let key = |body: &str| parse(body, 0).events[0].keys;
        let first = key(&alert("firing", "f1", "2024-01-01T00:00:00Z", ZERO));
        // The group's next notification repeats the alert unchanged.
        let repeat = alert("firing", "f1", "2024-01-01T00:00:00Z", ZERO).replace(
            r#""receiver":"bc""#,
            r#""receiver":"bc","groupKey":"{}:{x=\"y\"}""#,
        );
        assert_eq!(first, key(&repeat));
        assert_ne!(
            first,
            key(&alert("firing", "f2", "2024-01-01T00:00:00Z", ZERO))
        );
        assert_ne!(
            first,
            key(&alert("firing", "f1", "2024-01-01T00:10:00Z", ZERO))
        );

        // Without fingerprints, the label sets tell alerts apart.
        let unprinted = |instance: &str| {
            format!(
                r#"{{"alerts":[{{"labels":{{"alertname":"X","instance":"{instance}"}},
                "startsAt":"2024-01-01T00:00:00Z","endsAt":"{ZERO}"}}]}}"#
            )
        };
        assert_eq!(key(&unprinted("a")), key(&unprinted("a")));
        assert_ne!(key(&unprinted("a")), key(&unprinted("b")));
    }

    #[test]
    fn bad_alerts_are_skipped_and_bad_envelopes_refused() {
        let batch = parse(
            r#"{"version":"5","alerts":[{"labels":{"alertname":"A"},"startsAt":"x"},
            {"annotations":{}}, 7, {"labels":"a=b"}]}"#,
            42,
        );
        assert_eq!(batch.events.len(), 1);
        assert_eq!(
            batch.events[0].event.time_ms, 42,
            "an unreadable start is the receive time"
        );
        assert_eq!(
            batch.skipped,
            [
                "alert 1: no \"labels\" object",
                "alert 2: not a JSON object",
                "alert 3: no \"labels\" object"
            ]
        );
        assert_eq!(
            batch.warnings,
            ["payload version \"5\" is not 4; read as version 4"]
        );

        for body in ["", "[]", "{}", r#"{"alerts":{}}"#, "{\"alerts\":[", "null"] {
            let refused = parse_notification(&Arc::from("am"), &labels(), body.as_bytes(), 0);
            assert!(
                matches!(refused, Err(SourceError::BadRequest(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn long_and_odd_label_values_are_cut_and_cleaned() {
        let body = format!(
            r#"{{"alerts":[{{"labels":{{"alertname":"{}","job":"a\nb","severity":3}}}}]}}"#,
            "n".repeat(300)
        );
        let batch = parse(&body, 0);
        let event = &batch.events[0].event;
        let name = event.label("alertname").unwrap();
        assert_eq!(name.chars().count(), MAX_LABEL_VALUE);
        assert!(name.ends_with('…'));
        assert_eq!(event.label("job"), Some("a b"));
        assert_eq!(event.label("severity"), Some("3"));
        assert_eq!(batch.warnings.len(), 1, "{:?}", batch.warnings);
    }
}
