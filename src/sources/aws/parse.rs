//! Verified AWS bodies into common events.
//!
//! An SNS body is one envelope. A `Notification` whose `Message` is an EventBridge event
//! or an SES notification becomes that event (or one SES event per recipient); any other
//! message becomes `aws.sns_notification`, and the two confirmations become events of
//! their own so that an unsubscribe can alert. An EventBridge API destination posts one
//! event (an array is read as a batch, each element on its own). Everything here is a
//! function of the body and the receive time only.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use super::sns::{Envelope, timestamp_ms};
use super::{eventbridge, ses};
use crate::event::{Event, Label, parse_traceparent};
use crate::sources::{ParsedBatch, ParsedEvent, SourceError, dedup_key};

/// What the SNS envelope adds to the events inside it.
pub struct Outer<'a> {
    pub source: &'a Arc<str>,
    /// The envelope's `Timestamp`, else the receive time: for inner events without a
    /// time of their own.
    pub fallback_ms: i64,
    /// `topic` (and, for SNS's own events, `region` and `account`).
    pub labels: Vec<Label>,
    pub traceparent: Option<String>,
    /// The SNS `MessageId`, for inner events without an id of their own.
    pub message_id: &'a str,
}

/// Parses one SNS envelope.
pub fn parse_sns_body(
    source: &Arc<str>,
    body: &[u8],
    received_ms: i64,
) -> Result<ParsedBatch, SourceError> {
    let envelope = Envelope::from_body(body).map_err(SourceError::BadRequest)?;
    let raw = std::str::from_utf8(body).map_err(|e| {
        SourceError::BadRequest(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
    })?;
    let raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
    let message_id = envelope.message_id.as_deref().unwrap_or_default();
    let topic_arn = envelope.topic_arn.as_deref().unwrap_or_default();
    let sent_ms = envelope.timestamp.as_deref().and_then(timestamp_ms);
    let outer = Outer {
        source,
        fallback_ms: sent_ms.unwrap_or(received_ms),
        labels: topic_label(topic_arn).into_iter().collect(),
        traceparent: traceparent_attribute(raw),
        message_id,
    };

    let own_kind = match envelope.kind.as_str() {
        "SubscriptionConfirmation" => "aws.sns_subscription_confirmation",
        "UnsubscribeConfirmation" => "aws.sns_unsubscribe_confirmation",
        "Notification" => {
            let message = envelope.message.as_deref().unwrap_or_default();
            if let Some(batch) = inner_events(&outer, message) {
                return Ok(batch);
            }
            "aws.sns_notification"
        }
        other => {
            return Err(SourceError::BadRequest(format!(
                "unknown SNS message type {other:?}"
            )));
        }
    };
    let mut labels = outer.labels.clone();
    labels.extend(arn_labels(topic_arn));
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let event = Event {
        source: source.clone(),
        kind: Cow::Borrowed(own_kind),
        time_ms: outer.fallback_ms,
        weight: 1.0,
        value: None,
        limit: None,
        labels,
        provider_id: (!message_id.is_empty()).then(|| message_id.to_string()),
        traceparent: outer.traceparent.clone(),
        raw: raw.into(),
    };
    let keys = Some(dedup_key(source, &["sns", &envelope.kind, message_id]));
    Ok(ParsedBatch {
        events: vec![ParsedEvent {
            position: 0,
            event,
            keys,
        }],
        ..ParsedBatch::default()
    })
}

/// The events of a `Message` that is an EventBridge event or an SES notification;
/// `None` for any other message.
fn inner_events(outer: &Outer<'_>, message: &str) -> Option<ParsedBatch> {
    let trimmed = message.trim_start();
    if !trimmed.starts_with('{') {
        return None;
    }
    let value: Value = serde_json::from_str(message).ok()?;
    let mut batch = ParsedBatch::default();
    if eventbridge::is_event(&value) {
        let event = eventbridge::event(outer, message, &value);
        batch.events.push(ParsedEvent {
            position: 0,
            event: event.0,
            keys: event.1,
        });
    } else if ses::is_notification(&value) {
        for (position, (event, keys)) in ses::events(outer, message, &value).into_iter().enumerate()
        {
            batch.events.push(ParsedEvent {
                position: position as u32,
                event,
                keys,
            });
        }
    } else {
        return None;
    }
    Some(batch)
}

/// Parses what an EventBridge API destination posted: one event, or an array of them.
pub fn parse_eventbridge_body(
    source: &Arc<str>,
    body: &[u8],
    received_ms: i64,
) -> Result<ParsedBatch, SourceError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).map_err(|e| {
        SourceError::BadRequest(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
    })?;
    let first = text.trim_start().as_bytes().first().copied();
    let elements: Vec<&str> = match first {
        Some(b'{') => vec![text.trim()],
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text)
            .map_err(|e| SourceError::BadRequest(format!("body is not a JSON array: {e}")))?
            .into_iter()
            .map(RawValue::get)
            .collect(),
        None => return Err(SourceError::BadRequest("empty body".into())),
        Some(_) => {
            return Err(SourceError::BadRequest(
                "expected an EventBridge event (a JSON object)".into(),
            ));
        }
    };
    let outer = Outer {
        source,
        fallback_ms: received_ms,
        labels: Vec::new(),
        traceparent: None,
        message_id: "",
    };
    let mut batch = ParsedBatch::default();
    for (position, element) in elements.into_iter().enumerate() {
        let parsed = serde_json::from_str::<Value>(element)
            .map_err(|e| e.to_string())
            .and_then(|value| {
                if eventbridge::is_event(&value) {
                    Ok(eventbridge::event(&outer, element, &value))
                } else {
                    Err("not an EventBridge event (no \"detail-type\")".to_string())
                }
            });
        match parsed {
            Ok((event, keys)) => batch.events.push(ParsedEvent {
                position: position as u32,
                event,
                keys,
            }),
            Err(reason) if first == Some(b'{') => {
                return Err(SourceError::BadRequest(format!("body is {reason}")));
            }
            Err(reason) => batch.skipped.push(format!("event {position}: {reason}")),
        }
    }
    Ok(batch)
}

/// `topic`: the name part of a topic ARN (`arn:aws:sns:region:account:name`).
fn topic_label(arn: &str) -> Option<Label> {
    let name = arn
        .rsplit(':')
        .next()
        .filter(|n| !n.is_empty() && arn.starts_with("arn:"))?;
    Some((Cow::Borrowed("topic"), Cow::Owned(clean(name, 256))))
}

/// `region` and `account` of an ARN, when it has them.
pub fn arn_labels(arn: &str) -> Vec<Label> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let mut labels = Vec::new();
    if parts.len() == 6 && parts[0] == "arn" {
        if !parts[3].is_empty() {
            labels.push((Cow::Borrowed("region"), Cow::Owned(clean(parts[3], 32))));
        }
        if !parts[4].is_empty() {
            labels.push((Cow::Borrowed("account"), Cow::Owned(clean(parts[4], 32))));
        }
    }
    labels
}

/// A free-form value made fit for a label: trimmed, control characters dropped, at most
/// `max` characters.
pub fn clean(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// A JSON value as text, when it is a string or a number.
pub fn text_of(value: Option<&Value>) -> Option<Cow<'_, str>> {
    match value? {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// An event time from an ISO 8601 field; times before 2006, when AWS began, are
/// placeholders (`1970-01-01T00:00:00Z` in published samples) and give way to `fallback_ms`.
pub fn event_time(value: Option<&Value>, fallback_ms: i64) -> i64 {
    const AWS_LAUNCH_MS: i64 = 1_136_073_600_000;
    text_of(value)
        .and_then(|t| timestamp_ms(&t))
        .filter(|ms| *ms >= AWS_LAUNCH_MS)
        .unwrap_or(fallback_ms)
}

/// The notification's `MessageAttributes` as name → value, for the events API; only
/// SNS's own events keep the envelope as their raw JSON, so only they have any.
pub fn message_attributes(raw: &str) -> serde_json::Map<String, Value> {
    let Ok(Value::Object(envelope)) = serde_json::from_str::<Value>(raw) else {
        return serde_json::Map::new();
    };
    let Some(Value::Object(attributes)) = envelope.get("MessageAttributes") else {
        return serde_json::Map::new();
    };
    attributes
        .iter()
        .filter_map(|(name, attribute)| Some((name.clone(), attribute.get("Value")?.clone())))
        .collect()
}

/// A valid `traceparent` message attribute. It reaches the events inside the message
/// too, whose raw JSON is the inner event.
// FIXME: other message attributes of a message that wraps an EventBridge or SES event are
// not kept, since that event's raw JSON is what the provider put in `Message`; keeping
// them would need a place on `Event` for passthrough fields beside `raw`.
fn traceparent_attribute(raw: &str) -> Option<String> {
    let attributes = message_attributes(raw);
    let value = attributes.get("traceparent")?.as_str()?;
    parse_traceparent(value).map(|_| value.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Arc<str> {
        Arc::from("aws")
    }

    #[test]
    fn a_plain_notification_keeps_the_envelope() {
        let body = br#"{"Type":"Notification","MessageId":"m-1","Message":"Hello world",
            "TopicArn":"arn:aws:sns:us-east-2:295079676684:alerts",
            "Timestamp":"2022-07-28T21:23:58.317Z",
            "MessageAttributes":{"traceparent":{"Type":"String",
              "Value":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
              "team":{"Type":"String","Value":"payments"}}}"#;
        let batch = parse_sns_body(&source(), body, 5).unwrap();
        let event = &batch.events[0].event;
        assert_eq!(event.kind, "aws.sns_notification");
        assert_eq!(event.time_ms, 1_659_043_438_317);
        assert_eq!(event.label("topic"), Some("alerts"));
        assert_eq!(event.label("region"), Some("us-east-2"));
        assert_eq!(event.label("account"), Some("295079676684"));
        assert_eq!(event.provider_id.as_deref(), Some("m-1"));
        assert!(event.traceparent.is_some());
        assert_eq!(message_attributes(&event.raw)["team"], "payments");
        let names: Vec<&str> = event.labels.iter().map(|l| l.0.as_ref()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn a_message_that_only_looks_like_json_is_a_plain_notification() {
        for message in [r#"{\"a\":1}"#, r#"{not json"#, "[1,2]", ""] {
            let body = format!(
                r#"{{"Type":"Notification","MessageId":"m","Message":"{message}",
                    "TopicArn":"arn:aws:sns:us-east-1:1:t","Timestamp":"x"}}"#
            );
            let batch = parse_sns_body(&source(), body.as_bytes(), 9).unwrap();
            assert_eq!(
                batch.events[0].event.kind, "aws.sns_notification",
                "{message}"
            );
            assert_eq!(batch.events[0].event.time_ms, 9, "an unreadable Timestamp");
        }
    }

    #[test]
    fn eventbridge_bodies() {
        let two = br#"[{"detail-type":"X","source":"custom","id":"1","detail":{}},
            {"no":"detail-type"}, 7]"#;
        let batch = parse_eventbridge_body(&source(), two, 0).unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.skipped.len(), 2, "{:?}", batch.skipped);
        for bad in [
            &b""[..],
            b"  ",
            b"\"text\"",
            b"{\"a\":1}",
            b"{\"detail-type\":",
            b"\xff{",
        ] {
            assert!(
                parse_eventbridge_body(&source(), bad, 0).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn arn_parts() {
        let labels = arn_labels("arn:aws:ses:us-east-1:888888888888:identity/example.com");
        assert_eq!(labels.len(), 2);
        assert!(arn_labels("arn:aws:ec2:us-east-1b:instance/i-1").is_empty());
        assert_eq!(topic_label("not-an-arn"), None);
    }

    fn fixture(path: &str) -> Vec<u8> {
        let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    #[test]
    fn ses_notifications_inside_sns() {
        let bounce = parse_sns_body(
            &source(),
            &fixture("other/ses_sns_bounce_real_eu_west_1.json"),
            0,
        )
        .unwrap();
        assert_eq!(bounce.events.len(), 1);
        let event = &bounce.events[0].event;
        assert_eq!(event.kind, "ses.bounce");
        assert_eq!(event.label("topic"), Some("55hubs-mautic-test"));
        assert_eq!(event.label("domain"), Some("nope.com"));
        assert_eq!(event.label("reason"), Some("5.1.1"));
        assert_eq!(event.label("region"), Some("eu-west-1"));
        assert_eq!(event.label("account"), Some("918057160339"));
        assert_eq!(event.label("from_domain"), Some("55hubs.ch"));
        assert_eq!(event.time_ms, 1_471_419_792_776);
        assert!(
            event.raw.starts_with("{\"notificationType\":\"Bounce\""),
            "{}",
            event.raw
        );

        let complaint = parse_sns_body(
            &source(),
            &fixture("other/ses_sns_complaint_mailbox_simulator.json"),
            0,
        )
        .unwrap();
        let event = &complaint.events[0].event;
        assert_eq!(event.kind, "ses.spamreport");
        assert_eq!(event.label("domain"), Some("simulator.amazonses.com"));
        assert_eq!(event.label("feedback_type"), Some("abuse"));
        assert_eq!(event.label("topic"), Some("ses-complaint"));
        assert_eq!(event.time_ms, 1_500_662_832_000);
    }

    #[test]
    fn confirmations_are_events_of_their_own() {
        for (file, kind) in [
            (
                "aws/sns_subscription_confirmation_real_eu_west_1.json",
                "aws.sns_subscription_confirmation",
            ),
            (
                "aws/sns_subscription_confirmation_docs.json",
                "aws.sns_subscription_confirmation",
            ),
            (
                "aws/sns_notification_docs.json",
                "aws.sns_subscription_confirmation",
            ),
            (
                "aws/sns_unsubscribe_confirmation_docs.json",
                "aws.sns_unsubscribe_confirmation",
            ),
            (
                "aws/sns_notification_real_signed_sha1.json",
                "aws.sns_notification",
            ),
        ] {
            let batch = parse_sns_body(&source(), &fixture(file), 0).unwrap();
            assert_eq!(batch.events.len(), 1, "{file}");
            assert_eq!(batch.events[0].event.kind, kind, "{file}");
            assert!(batch.events[0].event.label("topic").is_some(), "{file}");
        }
    }

    #[test]
    fn an_eventbridge_event_counts_once_whichever_way_it_came() {
        let direct = fixture("aws/eventbridge_spot_interruption_warning_anth.json");
        let message = serde_json::to_string(std::str::from_utf8(&direct).unwrap()).unwrap();
        let envelope = format!(
            r#"{{"Type":"Notification","MessageId":"sns-1","Message":{message},
                "TopicArn":"arn:aws:sns:us-east-1:123456789012:spot",
                "Timestamp":"2024-05-01T00:00:00.000Z"}}"#
        );
        let via_sns = parse_sns_body(&source(), envelope.as_bytes(), 0).unwrap();
        let posted = parse_eventbridge_body(&source(), &direct, 0).unwrap();
        let (a, b) = (&via_sns.events[0], &posted.events[0]);
        assert_eq!(a.event.kind, "aws.spot_interruption");
        assert_eq!(a.keys, b.keys);
        assert_eq!(a.event.label("topic"), Some("spot"));
        assert_eq!(
            a.event.raw, b.event.raw,
            "the raw event is the EventBridge event"
        );
        assert_eq!(
            a.event.time_ms, 1_714_521_600_000,
            "placeholder time: the SNS Timestamp"
        );
    }

    #[test]
    fn whole_body_errors() {
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"Type\":\"Other\"}",
            b"{\"Message\":\"no type\"}",
            b"{\"Type\":\"Notification\",\"Message\":\"\xff\"}",
        ] {
            assert!(parse_sns_body(&source(), bad, 0).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        ) {
            let _ = parse_sns_body(&source(), &body, 0);
            let _ = parse_eventbridge_body(&source(), &body, 0);
            if let Ok(envelope) = Envelope::from_body(&body) {
                let _ = envelope.string_to_sign();
            }
        }

        #[test]
        fn arbitrary_messages_never_panic(
            message in "\\PC{0,200}",
            kind in "(Bounce|Complaint|Delivery|Open|x)",
        ) {
            let text = serde_json::json!(message);
            for inner in [
                message.clone(),
                format!(r#"{{"detail-type":{text},"detail":{{"state":{text}}}}}"#),
                format!(r#"{{"notificationType":"{kind}","mail":{{"source":{text}}},
                    "bounce":{{"bouncedRecipients":[
                      {{"emailAddress":{text},"status":{text}}}]}}}}"#),
            ] {
                let body = serde_json::json!({
                    "Type": "Notification", "MessageId": message, "Message": inner,
                    "TopicArn": message, "Timestamp": message,
                });
                let batch = parse_sns_body(&source(), body.to_string().as_bytes(), 0).unwrap();
                proptest::prop_assert!(!batch.events.is_empty());
                for parsed in &batch.events {
                    let labels = &parsed.event.labels;
                    proptest::prop_assert!(labels.windows(2).all(|w| w[0].0 < w[1].0));
                    // SES events are about addresses; none reaches a label.
                    let ses = parsed.event.kind.starts_with("ses.");
                    proptest::prop_assert!(!ses || labels.iter().all(|(_, v)| !v.contains('@')));
                }
            }
        }
    }
}
