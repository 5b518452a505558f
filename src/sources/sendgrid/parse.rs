//! SendGrid Event Webhook batches into common events.
//!
//! A batch is a JSON array of event objects (a bare object is taken as a batch of one, as
//! some tools post single events). Each element is parsed on its own so that one malformed
//! event is skipped and counted while the rest are kept. Fields this file does not know
//! stay in the event's raw JSON; nothing is rejected for being new.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{Event, Label, parse_traceparent};
use crate::sources::{DedupKeys, ParsedBatch, ParsedEvent, SourceError, dedup_key};

/// The fields rules and dedup need; everything else is read from the raw JSON when needed.
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    email: Option<Cow<'a, str>>,
    timestamp: Option<serde_json::Number>,
    #[serde(borrow)]
    sg_event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sg_message_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    bounce_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    bounce_classification: Option<Cow<'a, str>>,
    category: Option<Category>,
    #[serde(borrow)]
    url: Option<Cow<'a, str>>,
    asm_group_id: Option<serde_json::Number>,
    pool: Option<Pool>,
    #[serde(borrow)]
    traceparent: Option<Cow<'a, str>>,
    custom_args: Option<CustomArgs>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Category {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Pool {
    name: Option<String>,
}

#[derive(Deserialize)]
struct CustomArgs {
    traceparent: Option<String>,
}

/// Parses a whole request body. `received_ms` stands in for a missing event timestamp.
pub fn parse_batch(
    source: &Arc<str>,
    body: &[u8],
    received_ms: i64,
) -> Result<ParsedBatch, SourceError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let elements: Vec<&RawValue> = match first {
        Some(b'[') => serde_json::from_slice(body).map_err(|e| {
            SourceError::BadRequest(format!("body is not a JSON array of events: {e}"))
        })?,
        Some(b'{') => vec![
            serde_json::from_slice(body)
                .map_err(|e| SourceError::BadRequest(format!("body is not a JSON object: {e}")))?,
        ],
        Some(_) => {
            return Err(SourceError::BadRequest(
                "expected a JSON array of SendGrid events".into(),
            ));
        }
        None => return Err(SourceError::BadRequest("empty body".into())),
    };

    let mut batch = ParsedBatch::default();
    for (position, raw) in elements.into_iter().enumerate() {
        match parse_event(source, raw, received_ms) {
            Ok((event, keys)) => batch.events.push(ParsedEvent {
                position: position as u32,
                event,
                keys,
            }),
            Err(reason) => batch.skipped.push(format!("event {position}: {reason}")),
        }
    }
    Ok(batch)
}

fn parse_event(
    source: &Arc<str>,
    raw: &RawValue,
    received_ms: i64,
) -> Result<(Event, DedupKeys), String> {
    let wire: WireEvent = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    let event_name = wire.event.as_deref().ok_or("missing \"event\"")?;
    let event_name = slug(event_name, 40);
    if event_name.is_empty() {
        return Err("empty \"event\"".into());
    }
    let time_ms = match &wire.timestamp {
        Some(n) => n
            .as_i64()
            .map(|s| s.saturating_mul(1000))
            .or_else(|| n.as_f64().map(|s| (s * 1000.0) as i64))
            .ok_or("\"timestamp\" out of range")?,
        None => received_ms,
    };

    let mut labels: Vec<Label> = Vec::with_capacity(8);
    labels.push((Cow::Borrowed("event"), event_name.clone()));
    labels.push((Cow::Borrowed("source"), source.to_string()));
    if let Some(domain) = wire.email.as_deref().and_then(recipient_domain) {
        labels.push((Cow::Borrowed("domain"), domain));
    }
    if let Some(reason) = reason_class(&event_name, wire.reason.as_deref(), wire.status.as_deref())
    {
        labels.push((Cow::Borrowed("reason"), reason));
    }
    if let Some(kind) = wire
        .bounce_type
        .as_deref()
        .filter(|_| event_name == "bounce")
    {
        labels.push((Cow::Borrowed("bounce_type"), slug(kind, 20)));
    }
    if let Some(class) = wire.bounce_classification.as_deref() {
        labels.push((Cow::Borrowed("classification"), slug(class, 40)));
    }
    match wire.category {
        Some(Category::One(one)) => labels.push((Cow::Borrowed("category"), one)),
        Some(Category::Many(mut many)) if !many.is_empty() => {
            many.sort();
            labels.push((Cow::Borrowed("category"), many.join(",")));
        }
        _ => {}
    }
    if let Some(group) = wire.asm_group_id {
        labels.push((Cow::Borrowed("asm_group_id"), group.to_string()));
    }
    if let Some(name) = wire.pool.and_then(|p| p.name) {
        labels.push((Cow::Borrowed("pool"), name));
    }
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    let traceparent = wire
        .traceparent
        .as_deref()
        .map(str::to_string)
        .or_else(|| wire.custom_args.and_then(|c| c.traceparent))
        .filter(|t| parse_traceparent(t).is_some());

    let mut keys = DedupKeys::default();
    // The provider's id, scoped by event type: ids are unique per event in practice,
    // and the scoping keeps documentation placeholders (one id for every type) apart.
    if let Some(id) = wire.sg_event_id.as_deref().filter(|id| !id.is_empty()) {
        keys.push(dedup_key(source, &["id", id, &event_name]));
    }
    let timestamp = wire
        .timestamp
        .as_ref()
        .map(|n| n.to_string())
        .unwrap_or_default();
    keys.push(dedup_key(
        source,
        &[
            "content",
            wire.sg_message_id.as_deref().unwrap_or(""),
            &event_name,
            &timestamp,
            wire.email.as_deref().unwrap_or(""),
            wire.url.as_deref().unwrap_or(""),
        ],
    ));

    let event = Event {
        source: source.clone(),
        kind: format!("sendgrid.{event_name}"),
        time_ms,
        weight: 1.0,
        labels,
        provider_id: wire.sg_event_id.map(Cow::into_owned),
        traceparent,
        raw: raw.get().into(),
    };
    Ok((event, keys))
}

/// Lowercase, `[a-z0-9_]` only, runs of anything else collapsed to one `_`, at most `max` bytes.
pub fn slug(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.trim().chars() {
        if out.len() >= max {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

fn recipient_domain(email: &str) -> Option<String> {
    let domain = email.trim().trim_end_matches('>').rsplit_once('@')?.1;
    let domain = domain.trim().trim_end_matches('.');
    if domain.is_empty() || domain.len() > 253 || domain.contains(char::is_whitespace) {
        return None;
    }
    Some(domain.to_ascii_lowercase())
}

/// A low-cardinality class for why an event happened: SendGrid's fixed drop reasons as
/// slugs, and the SMTP status class (`5.1.1`, or `550` without an enhanced code) for
/// bounces, blocks and deferrals, whose free-text reasons would explode a label.
fn reason_class(event: &str, reason: Option<&str>, status: Option<&str>) -> Option<String> {
    match event {
        "dropped" => reason.map(|r| slug(r, 40)).filter(|r| !r.is_empty()),
        "bounce" | "deferred" | "blocked" => Some(
            status
                .and_then(enhanced_status)
                .or_else(|| reason.and_then(enhanced_status))
                .or_else(|| reason.and_then(basic_status))
                .or_else(|| status.and_then(basic_status))
                .unwrap_or_else(|| "unknown".to_string()),
        ),
        _ => None,
    }
}

/// First `d.d{1,3}.d{1,3}` enhanced status code in `text` (RFC 3463), class 2, 4 or 5.
fn enhanced_status(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for start in 0..bytes.len() {
        if !matches!(bytes[start], b'2' | b'4' | b'5')
            || (start > 0 && bytes[start - 1].is_ascii_alphanumeric())
        {
            continue;
        }
        let rest = &text[start..];
        let mut parts = rest.splitn(3, '.');
        let (Some(class), Some(subject), Some(tail)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let detail: String = tail.chars().take_while(char::is_ascii_digit).collect();
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
        if class.len() == 1 && digits(subject) && digits(&detail) {
            return Some(format!("{class}.{subject}.{detail}"));
        }
    }
    None
}

/// A leading three-digit SMTP reply code.
fn basic_status(text: &str) -> Option<String> {
    let code: String = text.trim().chars().take(3).collect();
    let valid = code.len() == 3
        && code.bytes().all(|b| b.is_ascii_digit())
        && matches!(code.as_bytes()[0], b'2' | b'4' | b'5');
    valid.then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Arc<str> {
        Arc::from("sg")
    }

    fn samples(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../shared/samples/sendgrid/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn every_documented_event_type() {
        let batch = parse_batch(&source(), &samples("docs_all_event_types_batch.json"), 0).unwrap();
        assert!(batch.skipped.is_empty(), "{:?}", batch.skipped);
        let kinds: Vec<&str> = batch.events.iter().map(|e| e.event.kind.as_str()).collect();
        for kind in [
            "sendgrid.processed",
            "sendgrid.deferred",
            "sendgrid.delivered",
            "sendgrid.open",
            "sendgrid.click",
            "sendgrid.bounce",
            "sendgrid.dropped",
            "sendgrid.spamreport",
            "sendgrid.unsubscribe",
            "sendgrid.group_unsubscribe",
            "sendgrid.group_resubscribe",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        }
        for parsed in &batch.events {
            for (name, value) in &parsed.event.labels {
                assert!(
                    !value.contains('@'),
                    "label {name}={value} holds an address"
                );
            }
        }
    }

    #[test]
    fn labels_of_a_dropped_invalid_event() {
        let batch = parse_batch(&source(), &samples("anymail_dropped_invalid.json"), 0).unwrap();
        let event = &batch.events[0].event;
        assert_eq!(event.kind, "sendgrid.dropped");
        assert_eq!(event.time_ms, 1_461_095_250_000);
        assert_eq!(event.label("reason"), Some("invalid"));
        assert_eq!(event.label("domain"), Some("invalid"));
        assert_eq!(event.provider_id.as_deref(), Some("3NPOePGOTkeM_U3fgWApfg"));
        assert!(
            event.raw.contains("anymail_id"),
            "custom args stay in the raw event"
        );
    }

    #[test]
    fn category_string_or_array_and_bare_objects_with_bom() {
        let batch = parse_batch(
            &source(),
            &samples("docs_category_array_and_string_mixed.json"),
            0,
        )
        .unwrap();
        let categories: Vec<_> = batch
            .events
            .iter()
            .map(|e| e.event.label("category"))
            .collect();
        assert_eq!(categories.len(), 2);
        assert!(categories.iter().all(Option::is_some));

        let processed = parse_batch(
            &source(),
            &samples("anymail_processed_custom_args_category_array.json"),
            0,
        )
        .unwrap();
        assert_eq!(
            processed.events[0].event.label("category"),
            Some("tag1,tag2")
        );

        let bounce = parse_batch(&source(), &samples("mirajavora_bounce_with_ip.json"), 0).unwrap();
        assert_eq!(
            bounce.events.len(),
            1,
            "a bare object with a BOM is a batch of one"
        );
        assert_eq!(bounce.events[0].event.kind, "sendgrid.bounce");
    }

    #[test]
    fn bounce_types_and_reason_classes() {
        let blocked = parse_batch(&source(), &samples("docs_bounce_type_blocked.json"), 0).unwrap();
        assert_eq!(
            blocked.events[0].event.label("bounce_type"),
            Some("blocked")
        );
        let bounce = parse_batch(&source(), &samples("docs_bounce_type_bounce.json"), 0).unwrap();
        assert_eq!(bounce.events[0].event.label("bounce_type"), Some("bounce"));
        assert_eq!(bounce.events[0].event.label("reason"), Some("5.0.0"));

        let table = [
            (
                "bounce",
                Some("550 5.1.1 mailbox unavailable"),
                None,
                "5.1.1",
            ),
            (
                "bounce",
                Some("550 mailbox unavailable "),
                Some("550"),
                "550",
            ),
            ("deferred", Some("421 try again later"), None, "421"),
            ("deferred", Some("no code here"), None, "unknown"),
            ("dropped", Some("Bounced Address"), None, "bounced_address"),
        ];
        for (event, reason, status, expected) in table {
            assert_eq!(
                reason_class(event, reason, status).as_deref(),
                Some(expected),
                "{reason:?}"
            );
        }
        assert_eq!(reason_class("open", Some("x"), None), None);
    }

    #[test]
    fn malformed_events_are_skipped_not_fatal() {
        let body = br#"[{"event":"processed","email":"a@example.com","timestamp":1},
            {"email":"no-event@example.com"}, 42, {"event":"dropped","timestamp":"soon"},
            {"event":"brand_new_type","timestamp":2,"novel":{"x":1}}]"#;
        let batch = parse_batch(&source(), body, 0).unwrap();
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[1].event.kind, "sendgrid.brand_new_type");
        assert_eq!(batch.events[1].position, 4);
        assert_eq!(batch.skipped.len(), 3, "{:?}", batch.skipped);
    }

    #[test]
    fn whole_body_errors() {
        for body in [&b""[..], b"   ", b"\"string\"", b"[{\"event\":", b"null"] {
            assert!(
                parse_batch(&source(), body, 0).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn traceparent_from_custom_args() {
        let body = br#"[{"event":"dropped","email":"x@example.com","timestamp":1,
            "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            {"event":"dropped","email":"x@example.com","timestamp":2,"traceparent":"junk"}]"#;
        let batch = parse_batch(&source(), body, 0).unwrap();
        assert!(batch.events[0].event.traceparent.is_some());
        assert!(batch.events[1].event.traceparent.is_none());
    }
}
