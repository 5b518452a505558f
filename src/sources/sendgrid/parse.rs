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
use crate::sources::loose::{Loose, split_array};
use crate::sources::{DedupKeys, ParsedBatch, ParsedEvent, SourceError, dedup_key};

/// The fields rules and dedup need; everything else is read from the raw JSON when
/// needed. Only `event` must have its documented type; the others are read loosely,
/// since senders vary (`"status": 550`, `"asm_group_id": "7"`, `"pool": "name"`).
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    email: Option<Loose<'a>>,
    #[serde(borrow)]
    timestamp: Option<Loose<'a>>,
    #[serde(borrow)]
    sg_event_id: Option<Loose<'a>>,
    #[serde(borrow)]
    sg_message_id: Option<Loose<'a>>,
    #[serde(borrow)]
    reason: Option<Loose<'a>>,
    #[serde(borrow)]
    status: Option<Loose<'a>>,
    #[serde(borrow)]
    response: Option<Loose<'a>>,
    #[serde(borrow, rename = "type")]
    bounce_type: Option<Loose<'a>>,
    #[serde(borrow)]
    bounce_classification: Option<Loose<'a>>,
    #[serde(borrow)]
    category: Option<Loose<'a>>,
    #[serde(borrow)]
    url: Option<Loose<'a>>,
    #[serde(borrow)]
    asm_group_id: Option<Loose<'a>>,
    #[serde(borrow)]
    pool: Option<Loose<'a>>,
    #[serde(borrow)]
    traceparent: Option<Loose<'a>>,
    #[serde(borrow)]
    custom_args: Option<Loose<'a>>,
}

/// Text of an optional loose field.
fn text<'b>(field: &'b Option<Loose<'_>>) -> Option<Cow<'b, str>> {
    field.as_ref().and_then(Loose::text)
}

/// Parses a whole request body. `received_ms` stands in for a missing event timestamp.
pub fn parse_batch(
    source: &Arc<str>,
    body: &[u8],
    received_ms: i64,
) -> Result<ParsedBatch, SourceError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let elements: Vec<&[u8]> = match first {
        Some(b'[') => match serde_json::from_slice::<Vec<&RawValue>>(body) {
            Ok(all) => all.into_iter().map(|raw| raw.get().as_bytes()).collect(),
            // Something inside one element is wrong (invalid UTF-8, a bad escape): find
            // the elements by structure so the others survive it.
            Err(error) => split_array(body).ok_or_else(|| {
                SourceError::BadRequest(format!("body is not a JSON array of events: {error}"))
            })?,
        },
        Some(b'{') => vec![body],
        Some(_) => {
            return Err(SourceError::BadRequest(
                "expected a JSON array of SendGrid events".into(),
            ));
        }
        None => return Err(SourceError::BadRequest("empty body".into())),
    };

    let mut batch = ParsedBatch::default();
    for (position, element) in elements.into_iter().enumerate() {
        let parsed = std::str::from_utf8(element)
            .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))
            .and_then(|raw| parse_event(source, raw, received_ms));
        match parsed {
            Ok((event, keys)) => batch.events.push(ParsedEvent {
                position: position as u32,
                event,
                keys,
            }),
            Err(reason) if first == Some(b'{') => {
                return Err(SourceError::BadRequest(format!(
                    "body is not a valid event: {reason}"
                )));
            }
            Err(reason) => batch.skipped.push(format!("event {position}: {reason}")),
        }
    }
    Ok(batch)
}

fn parse_event(
    source: &Arc<str>,
    raw: &str,
    received_ms: i64,
) -> Result<(Event, DedupKeys), String> {
    let wire: WireEvent = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let event_name = wire.event.as_deref().ok_or("missing \"event\"")?;
    let event_name = slug(event_name, 40);
    if event_name.is_empty() {
        return Err("empty \"event\"".into());
    }
    // Unix seconds. A missing value, or one no clock could have written (negative,
    // past year 9999, or milliseconds by mistake), gives way to the receive time; the
    // value itself stays in the raw event and in the dedup key.
    let timestamp = wire.timestamp.as_ref().and_then(Loose::integer);
    let time_ms = match timestamp.filter(|secs| (0..=MAX_UNIX_SECONDS).contains(secs)) {
        Some(secs) => secs * 1000,
        None => received_ms,
    };

    let email = text(&wire.email);
    let known = super::KNOWN_KINDS.iter().find(|k| k[9..] == event_name);
    let mut labels: Vec<Label> = Vec::with_capacity(8);
    let event_label = match known {
        Some(kind) => Cow::Borrowed(&kind[9..]),
        None => Cow::Owned(event_name.clone()),
    };
    labels.push((Cow::Borrowed("event"), event_label));
    if let Some(domain) = email.as_deref().and_then(recipient_domain) {
        labels.push((Cow::Borrowed("domain"), Cow::Owned(domain)));
    }
    let reason = text(&wire.reason);
    let status = text(&wire.status);
    let response = text(&wire.response);
    let smtp = Smtp {
        reason: reason.as_deref(),
        status: status.as_deref(),
        response: response.as_deref(),
    };
    if let Some(class) = reason_class(&event_name, &smtp) {
        labels.push((Cow::Borrowed("reason"), Cow::Owned(class)));
    }
    if let Some(kind) = text(&wire.bounce_type).filter(|_| event_name == "bounce") {
        labels.push((Cow::Borrowed("bounce_type"), Cow::Owned(slug(&kind, 20))));
    }
    if let Some(class) = text(&wire.bounce_classification) {
        labels.push((
            Cow::Borrowed("classification"),
            Cow::Owned(slug(&class, 40)),
        ));
    }
    if let Some(category) = wire.category.as_ref() {
        let mut all: Vec<String> = category
            .texts()
            .iter()
            .map(|c| label_text(c, 100))
            .collect();
        all.sort();
        all.dedup();
        if !all.is_empty() {
            labels.push((Cow::Borrowed("category"), Cow::Owned(all.join(","))));
        }
    }
    let group = text(&wire.asm_group_id);
    if let Some(group) = &group {
        labels.push((
            Cow::Borrowed("asm_group_id"),
            Cow::Owned(label_text(group, 20)),
        ));
    }
    let pool = wire
        .pool
        .as_ref()
        .and_then(|p| p.field("name").and_then(Loose::text).or_else(|| p.text()));
    if let Some(name) = pool {
        labels.push((Cow::Borrowed("pool"), Cow::Owned(label_text(&name, 64))));
    }
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    let traceparent = text(&wire.traceparent)
        .or_else(|| {
            wire.custom_args
                .as_ref()
                .and_then(|c| c.field("traceparent"))
                .and_then(Loose::text)
        })
        .filter(|t| parse_traceparent(t).is_some())
        .map(Cow::into_owned);

    let event_id = text(&wire.sg_event_id).filter(|id| !id.is_empty());
    let message_id = text(&wire.sg_message_id).filter(|id| !id.is_empty());
    let timestamp_text = timestamp.map(|t| t.to_string()).unwrap_or_default();
    let email = email.as_deref().unwrap_or("");
    let url = text(&wire.url);
    let url = url.as_deref().unwrap_or("");
    // One key per event, which is also what the journal's dedup index costs:
    // - with a message id, the message, type, time, recipient and URL: this catches the
    //   redeliveries that came with a new sg_event_id (field case B25) as well as the
    //   ordinary ones with the same id;
    // - without one, the provider's id scoped by type (ids are unique per event; the
    //   scoping keeps documentation placeholders, one id for every type, apart);
    // - without either, the content with the group id, so that distinct unsubscribes
    //   are not merged into one.
    let key = match (&message_id, &event_id) {
        (Some(message), _) => dedup_key(
            source,
            &["content", message, &event_name, &timestamp_text, email, url],
        ),
        (None, Some(id)) => dedup_key(source, &["id", id, &event_name]),
        (None, None) => {
            let group = group.as_deref().unwrap_or("");
            dedup_key(
                source,
                &["bare", &event_name, &timestamp_text, email, url, group],
            )
        }
    };
    let keys: DedupKeys = Some(key);

    let event = Event {
        source: source.clone(),
        kind: match known {
            Some(kind) => Cow::Borrowed(kind),
            None => Cow::Owned(format!("sendgrid.{event_name}")),
        },
        time_ms,
        weight: 1.0,
        value: None,
        limit: None,
        labels,
        provider_id: event_id.map(Cow::into_owned),
        traceparent,
        raw: raw.into(),
    };
    Ok((event, keys))
}

/// A free-form value made fit for a label: control characters dropped, at most `max`
/// characters.
fn label_text(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
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
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    valid.then(|| domain.to_lowercase())
}

/// Latest year-9999 second: later "timestamps" are not Unix seconds.
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// The fields that may carry an SMTP answer: bounces put it in `reason` and `status`,
/// deferrals in `response` (`"400 try again later"`).
struct Smtp<'a> {
    reason: Option<&'a str>,
    status: Option<&'a str>,
    response: Option<&'a str>,
}

/// A low-cardinality class for why an event happened: SendGrid's fixed drop reasons as
/// slugs, and the SMTP status class (`5.1.1`, or `550` without an enhanced code) for
/// bounces, blocks and deferrals, whose free-text reasons would explode a label.
fn reason_class(event: &str, smtp: &Smtp) -> Option<String> {
    let Smtp {
        reason,
        status,
        response,
    } = *smtp;
    match event {
        "dropped" => reason.map(|r| slug(r, 40)).filter(|r| !r.is_empty()),
        "bounce" | "deferred" | "blocked" => Some(
            [status, reason, response]
                .into_iter()
                .flatten()
                .find_map(enhanced_status)
                .or_else(|| {
                    [reason, response, status]
                        .into_iter()
                        .flatten()
                        .find_map(basic_status)
                })
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
            "{}/tests/fixtures/sendgrid/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn every_documented_event_type() {
        let batch = parse_batch(&source(), &samples("docs_all_event_types_batch.json"), 0).unwrap();
        assert!(batch.skipped.is_empty(), "{:?}", batch.skipped);
        let kinds: Vec<&str> = batch.events.iter().map(|e| e.event.kind.as_ref()).collect();
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

        // (event, reason, status, response, expected class)
        let table = [
            (
                "bounce",
                Some("550 5.1.1 mailbox unavailable"),
                None,
                None,
                "5.1.1",
            ),
            (
                "bounce",
                Some("550 mailbox unavailable "),
                Some("550"),
                None,
                "550",
            ),
            ("deferred", Some("421 try again later"), None, None, "421"),
            ("deferred", None, None, Some("400 try again later"), "400"),
            (
                "deferred",
                None,
                None,
                Some("451 4.7.1 greylisted"),
                "4.7.1",
            ),
            ("deferred", Some("no code here"), None, None, "unknown"),
            (
                "dropped",
                Some("Bounced Address"),
                None,
                None,
                "bounced_address",
            ),
        ];
        for (event, reason, status, response, expected) in table {
            let smtp = Smtp {
                reason,
                status,
                response,
            };
            assert_eq!(
                reason_class(event, &smtp).as_deref(),
                Some(expected),
                "{reason:?} {response:?}"
            );
        }
        let open = Smtp {
            reason: Some("x"),
            status: None,
            response: None,
        };
        assert_eq!(reason_class("open", &open), None);

        // The documented deferral carries its code only in `response`.
        let all = parse_batch(&source(), &samples("docs_all_event_types_batch.json"), 0).unwrap();
        let deferred = all
            .events
            .iter()
            .find(|e| e.event.kind == "sendgrid.deferred")
            .unwrap();
        assert_eq!(deferred.event.label("reason"), Some("400"));
    }

    #[test]
    fn implausible_timestamps_give_way_to_the_receive_time() {
        let body = br#"[{"event":"bounce","email":"a@example.com","timestamp":1700000000},
            {"event":"bounce","email":"a@example.com"},
            {"event":"bounce","email":"a@example.com","timestamp":-1e18},
            {"event":"bounce","email":"a@example.com","timestamp":99999999999999999999},
            {"event":"bounce","email":"a@example.com","timestamp":1796331000000},
            {"event":"bounce","email":"a@example.com","timestamp":-5}]"#;
        let batch = parse_batch(&source(), body, 1_750_000_000_123).unwrap();
        let times: Vec<i64> = batch.events.iter().map(|e| e.event.time_ms).collect();
        assert_eq!(
            times,
            [
                1_700_000_000_000,
                1_750_000_000_123,
                1_750_000_000_123,
                1_750_000_000_123,
                1_750_000_000_123,
                1_750_000_000_123
            ]
        );
    }

    #[test]
    fn malformed_events_are_skipped_not_fatal() {
        let body = br#"[{"event":"processed","email":"a@example.com","timestamp":1},
            {"email":"no-event@example.com"}, 42, {"event":"dropped","timestamp":"soon"},
            {"event":"brand_new_type","timestamp":2,"novel":{"x":1}}]"#;
        let batch = parse_batch(&source(), body, 7_000).unwrap();
        assert_eq!(batch.events.len(), 3);
        assert_eq!(
            batch.events[1].event.time_ms, 7_000,
            "an unreadable timestamp is the receive time"
        );
        assert_eq!(batch.events[2].event.kind, "sendgrid.brand_new_type");
        assert_eq!(batch.events[2].position, 4);
        assert_eq!(batch.skipped.len(), 2, "{:?}", batch.skipped);
    }

    /// One event with invalid UTF-8 or a bad escape costs that event only (the kind of
    /// fault of field case B12).
    #[test]
    fn broken_bytes_in_one_event_spare_the_others() {
        let mut body = br#"[{"event":"processed","email":"a"#.to_vec();
        body.extend_from_slice(b"\xff\xfe");
        body.extend_from_slice(br#"@example.com","timestamp":1,"sg_event_id":"u1"},"#);
        body.extend_from_slice(br#"{"event":"processed","note":"bad\x","sg_event_id":"u2"},"#);
        body.extend_from_slice(br#"{"event":"processed","email":"b@example.com","timestamp":1,"#);
        body.extend_from_slice(br#""sg_event_id":"u3","text":"[}{]\"\\"}]"#);
        let batch = parse_batch(&source(), &body, 0).unwrap();
        assert_eq!(batch.events.len(), 1, "{:?}", batch.skipped);
        assert_eq!(batch.events[0].position, 2);
        assert_eq!(batch.events[0].event.provider_id.as_deref(), Some("u3"));
        assert!(
            batch.skipped[0].starts_with("event 0: invalid UTF-8"),
            "{:?}",
            batch.skipped
        );
        assert!(
            batch.skipped[1].starts_with("event 1: "),
            "{:?}",
            batch.skipped
        );

        for broken in [
            &b"[{\"event\":\"x\"}"[..],
            b"[{\"event\":\"x\"}] trailing",
            b"[}]",
        ] {
            assert!(
                parse_batch(&source(), broken, 0).is_err(),
                "{:?}",
                String::from_utf8_lossy(broken)
            );
        }
    }

    #[test]
    fn odd_field_types_keep_the_event() {
        let body = br#"[{"event":"bounce","email":"x@example.com","status":550,"asm_group_id":"7",
            "pool":"mypool","category":["a",1],"sg_event_id":789,
            "timestamp":"1700000000","type":7}]"#;
        let batch = parse_batch(&source(), body, 0).unwrap();
        assert!(batch.skipped.is_empty(), "{:?}", batch.skipped);
        let event = &batch.events[0].event;
        assert_eq!(event.time_ms, 1_700_000_000_000);
        assert_eq!(event.label("reason"), Some("550"));
        assert_eq!(event.label("asm_group_id"), Some("7"));
        assert_eq!(event.label("pool"), Some("mypool"));
        assert_eq!(event.label("category"), Some("1,a"));
        assert_eq!(event.label("bounce_type"), Some("7"));
        assert_eq!(event.provider_id.as_deref(), Some("789"));
    }

    #[test]
    fn dedup_keys_do_not_merge_distinct_events() {
        let body = br#"[{"event":"open","email":"x@example.com","timestamp":1,"sg_event_id":"a"},
            {"event":"open","email":"x@example.com","timestamp":1,"sg_event_id":"b"},
            {"event":"group_unsubscribe","email":"x@example.com","timestamp":1,"asm_group_id":7},
            {"event":"group_unsubscribe","email":"x@example.com","timestamp":1,"asm_group_id":8}]"#;
        let batch = parse_batch(&source(), body, 0).unwrap();
        let mut keys: Vec<i64> = batch.events.iter().flat_map(|e| e.keys).collect();
        let total = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!((total, keys.len()), (4, 4));
    }

    #[test]
    fn domains_are_validated_and_lowercased() {
        assert_eq!(recipient_domain("x@ÉCOLE.fr").as_deref(), Some("école.fr"));
        assert_eq!(recipient_domain("x@<!channel>"), None);
        assert_eq!(recipient_domain("no-at-sign"), None);
        assert_eq!(
            recipient_domain("x@Example.COM.").as_deref(),
            Some("example.com")
        );
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any bytes: an answer, never a panic; kept events are well formed.
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(0u8.., 0..512)) {
            if let Ok(batch) = parse_batch(&source(), &body, 0) {
                for parsed in batch.events {
                    proptest::prop_assert!(parsed.event.kind.starts_with("sendgrid."));
                    proptest::prop_assert!(parsed.event.weight.is_finite());
                }
            }
        }

        /// Mangled real batches: a byte changed anywhere in a real batch is parsed or
        /// refused, never a panic.
        #[test]
        fn mangled_real_batches_never_panic(index in 0usize..4096, byte in 0u8..) {
            let mut body = samples("docs_all_event_types_batch.json");
            let at = index % body.len();
            body[at] = byte;
            let _ = parse_batch(&source(), &body, 0);
        }
    }
}
