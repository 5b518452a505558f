//! Amazon SES notifications (as SNS delivers them) into common events, one per
//! recipient, labelled as SendGrid labels the same things.
//!
//! A bounce is `ses.bounce` and a complaint `ses.spamreport`, with SendGrid's label names
//! and, where the meaning is the same, its values: `event`, `domain` (of the recipient),
//! `reason` (the SMTP status class), `bounce_type` (`bounce` for a permanent bounce,
//! `blocked` for a transient one) and `classification` (SendGrid's classes as slugs). So
//! one rule over `sendgrid.bounce` and `ses.bounce` grouped by `domain` covers both
//! providers. SES's own fields (`bounce_subtype`, `feedback_type`) are labels too, and the
//! notification itself stays the raw event, narrowed to that recipient.

use std::borrow::Cow;

use serde_json::Value;

use super::parse::{Outer, arn_labels, clean, event_time, text_of};
use crate::event::{Event, Label};
use crate::sources::sendgrid::parse::slug;
use crate::sources::{DedupKeys, dedup_key};

/// Every kind SES notifications become.
pub const KINDS: &[&str] = &["ses.bounce", "ses.spamreport", "ses.delivered", "ses.event"];

/// Labels of SES events.
pub const LABELS: &[&str] = &[
    "account",
    "bounce_subtype",
    "bounce_type",
    "classification",
    "complaint_subtype",
    "domain",
    "event",
    "feedback_type",
    "from_domain",
    "reason",
    "region",
    "topic",
];

/// Whether `value` is an SES notification (`notificationType`) or an SES event
/// published through a configuration set (`eventType`).
pub fn is_notification(value: &Value) -> bool {
    let kind = value
        .get("notificationType")
        .or_else(|| value.get("eventType"));
    kind.is_some_and(Value::is_string) && value.get("mail").is_some_and(Value::is_object)
}

/// What each notification type is called here, where its details are, and where in
/// the details its recipients are listed.
struct Shape {
    kind: &'static str,
    event: &'static str,
    details: &'static str,
    recipients: &'static str,
}

const SHAPES: &[(&str, Shape)] = &[
    (
        "Bounce",
        Shape {
            kind: "ses.bounce",
            event: "bounce",
            details: "bounce",
            recipients: "bouncedRecipients",
        },
    ),
    (
        "Complaint",
        Shape {
            kind: "ses.spamreport",
            event: "spamreport",
            details: "complaint",
            recipients: "complainedRecipients",
        },
    ),
    (
        "Delivery",
        Shape {
            kind: "ses.delivered",
            event: "delivered",
            details: "delivery",
            recipients: "recipients",
        },
    ),
];

/// One event per recipient of the notification (one event for a type without
/// recipients).
/// `raw` is the notification's text and `value` the same parsed.
pub fn events(outer: &Outer<'_>, raw: &str, value: &Value) -> Vec<(Event, DedupKeys)> {
    let type_name = text_of(
        value
            .get("notificationType")
            .or_else(|| value.get("eventType")),
    )
    .unwrap_or_default();
    let shape = SHAPES
        .iter()
        .find(|(name, _)| *name == type_name)
        .map(|(_, s)| s);
    let mail = value.get("mail");
    let details = shape.and_then(|s| value.get(s.details));

    let mut common: Vec<Label> = outer.labels.clone();
    let event_name = match shape {
        Some(shape) => Cow::Borrowed(shape.event),
        None => Cow::Owned(slug(&type_name, 40)),
    };
    common.push((Cow::Borrowed("event"), event_name));
    let source_arn = text_of(mail.and_then(|m| m.get("sourceArn"))).unwrap_or_default();
    common.extend(arn_labels(&source_arn));
    if !common.iter().any(|(k, _)| k == "account")
        && let Some(account) = text_of(mail.and_then(|m| m.get("sendingAccountId")))
    {
        common.push((Cow::Borrowed("account"), Cow::Owned(clean(&account, 32))));
    }
    if let Some(from) = text_of(mail.and_then(|m| m.get("source"))).and_then(|s| domain_of(&s)) {
        common.push((Cow::Borrowed("from_domain"), Cow::Owned(from)));
    }
    let push = |labels: &mut Vec<Label>, name: &'static str, text: Option<Cow<'_, str>>| {
        if let Some(text) = text.map(|t| slug(&t, 40)).filter(|t| !t.is_empty()) {
            labels.push((Cow::Borrowed(name), Cow::Owned(text)));
        }
    };
    match shape.map(|s| s.event) {
        Some("bounce") => {
            let bounce_type = text_of(details.and_then(|d| d.get("bounceType")));
            let mapped = bounce_type.as_deref().map(|t| match t {
                "Permanent" => Cow::Borrowed("bounce"),
                "Transient" => Cow::Borrowed("blocked"),
                other => Cow::Owned(other.to_string()),
            });
            push(&mut common, "bounce_type", mapped);
            push(
                &mut common,
                "bounce_subtype",
                text_of(details.and_then(|d| d.get("bounceSubType"))),
            );
        }
        Some("spamreport") => {
            push(
                &mut common,
                "feedback_type",
                text_of(details.and_then(|d| d.get("complaintFeedbackType"))),
            );
            push(
                &mut common,
                "complaint_subtype",
                text_of(details.and_then(|d| d.get("complaintSubType"))),
            );
        }
        _ => {}
    }

    let time_ms = event_time(
        details.and_then(|d| d.get("timestamp")),
        event_time(mail.and_then(|m| m.get("timestamp")), outer.fallback_ms),
    );
    let feedback_id = text_of(details.and_then(|d| d.get("feedbackId")));
    let mail_id = text_of(mail.and_then(|m| m.get("messageId")));
    let id = feedback_id
        .clone()
        .or(mail_id)
        .map(Cow::into_owned)
        .unwrap_or_else(|| outer.message_id.to_string());

    let recipients: Vec<Value> = shape
        .and_then(|s| details.and_then(|d| d.get(s.recipients)))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let make = |recipient: Option<&Value>| {
        let address = recipient
            .and_then(|r| text_of(r.get("emailAddress")).or_else(|| text_of(Some(r))))
            .unwrap_or_default()
            .into_owned();
        let mut labels = common.clone();
        if let Some(domain) = domain_of(&address) {
            labels.push((Cow::Borrowed("domain"), Cow::Owned(domain)));
        }
        if shape.is_some_and(|s| s.event == "bounce") {
            let status = recipient.and_then(|r| text_of(r.get("status")));
            let diagnostic = recipient.and_then(|r| text_of(r.get("diagnosticCode")));
            let class = [status.as_deref(), diagnostic.as_deref()]
                .into_iter()
                .flatten()
                .find_map(status_class)
                .unwrap_or_else(|| "unknown".to_string());
            let subtype = text_of(details.and_then(|d| d.get("bounceSubType")));
            let classification = classification(subtype.as_deref().unwrap_or_default(), &class);
            labels.push((Cow::Borrowed("reason"), Cow::Owned(class)));
            labels.push((
                Cow::Borrowed("classification"),
                Cow::Borrowed(classification),
            ));
        }
        labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);

        let raw = match recipients.len() {
            0 | 1 => raw.trim().to_string(),
            _ => narrowed(value, shape, recipient),
        };
        let key = dedup_key(
            outer.source,
            &["ses", &type_name, &id, &address.to_ascii_lowercase()],
        );
        let event = Event {
            source: outer.source.clone(),
            kind: Cow::Borrowed(shape.map_or("ses.event", |s| s.kind)),
            time_ms,
            weight: 1.0,
            value: None,
            limit: None,
            labels,
            provider_id: feedback_id.as_deref().map(str::to_string),
            traceparent: outer.traceparent.clone(),
            raw: raw.into(),
        };
        (event, Some(key))
    };
    if recipients.is_empty() {
        vec![make(None)]
    } else {
        recipients.iter().map(|r| make(Some(r))).collect()
    }
}

/// The notification with its recipient list cut to the one this event is about.
fn narrowed(value: &Value, shape: Option<&Shape>, recipient: Option<&Value>) -> String {
    let (Some(shape), Some(recipient)) = (shape, recipient) else {
        return value.to_string();
    };
    let mut copy = value.clone();
    if let Some(list) = copy
        .get_mut(shape.details)
        .and_then(|d| d.get_mut(shape.recipients))
    {
        *list = Value::Array(vec![recipient.clone()]);
    }
    copy.to_string()
}

/// The lowercased domain of an address (`User <a@Example.com>` too); never the address.
fn domain_of(address: &str) -> Option<String> {
    let domain = address.trim().trim_end_matches('>').rsplit_once('@')?.1;
    let domain = domain.trim().trim_end_matches('.');
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    valid.then(|| domain.to_lowercase())
}

/// The SMTP status class of a recipient: an enhanced code (`5.1.1`, RFC 3463) found in
/// `text`, or a three-digit reply code.
fn status_class(text: &str) -> Option<String> {
    let words = text.split(|c: char| !(c.is_ascii_digit() || c == '.'));
    for word in words.clone() {
        let parts: Vec<&str> = word.trim_matches('.').split('.').collect();
        let digits = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
        };
        if parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && digits(parts[1], 3)
            && digits(parts[2], 3)
        {
            return Some(parts.join("."));
        }
    }
    words
        .map(|w| w.trim_matches('.'))
        .find(|w| {
            w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()) && w.starts_with(['4', '5'])
        })
        .map(str::to_string)
}

/// SendGrid's bounce classification for an SES bounce: from SES's sub-type where it
/// says, else from the status class.
fn classification(subtype: &str, class: &str) -> &'static str {
    match subtype {
        "NoEmail" => return "invalid_address",
        "MailboxFull" => return "mailbox_unavailable",
        "MessageTooLarge" | "ContentRejected" | "AttachmentRejected" => return "content",
        // SES refused to send to an address it had suppressed; SendGrid counts these as
        // drops, so there is no SendGrid class to borrow.
        "Suppressed" | "OnAccountSuppressionList" => return "suppressed",
        _ => {}
    }
    let mut parts = class.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some("1"), Some(_)) => "invalid_address",
        (Some(_), Some("2"), Some(_)) => "mailbox_unavailable",
        (Some(_), Some("3"), Some("4")) => "content",
        (Some(_), Some("4"), Some(_)) => "technical_failure",
        (Some(_), Some("7"), Some(_)) => "reputation",
        _ => "unclassified",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn outer(source: &Arc<str>) -> Outer<'_> {
        Outer {
            source,
            fallback_ms: 3,
            labels: vec![(Cow::Borrowed("topic"), Cow::Borrowed("ses"))],
            traceparent: None,
            message_id: "sns-id",
        }
    }

    fn sample(name: &str) -> (String, Value) {
        let path = format!("{}/tests/fixtures/other/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let value = serde_json::from_str(&text).unwrap();
        (text, value)
    }

    fn parsed(text: &str) -> (String, Value) {
        (text.to_string(), serde_json::from_str(text).unwrap())
    }

    fn labels(event: &Event) -> Vec<String> {
        event
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    #[test]
    fn a_documented_bounce_is_one_event_labelled_like_sendgrid() {
        let source: Arc<str> = Arc::from("ses");
        let (raw, value) = sample("ses_notification_bounce_with_dsn_docs.json");
        assert!(is_notification(&value));
        let events = events(&outer(&source), &raw, &value);
        assert_eq!(
            events.len(),
            1,
            "one bounced recipient of three destinations"
        );
        let (event, key) = &events[0];
        assert_eq!(event.kind, "ses.bounce");
        assert_eq!(
            labels(event),
            [
                "account=888888888888",
                "bounce_subtype=general",
                "bounce_type=bounce",
                "classification=invalid_address",
                "domain=example.com",
                "event=bounce",
                "from_domain=example.com",
                "reason=5.1.1",
                "region=us-east-1",
                "topic=ses"
            ]
        );
        assert_eq!(event.time_ms, 1_453_906_778_237);
        assert!(key.is_some());
        assert!(!labels(event).iter().any(|l| l.contains('@')));
    }

    #[test]
    fn a_documented_complaint_is_a_spamreport() {
        let source: Arc<str> = Arc::from("ses");
        let (raw, value) = sample("ses_notification_complaint_with_feedback_docs.json");
        let events = events(&outer(&source), &raw, &value);
        assert_eq!(events.len(), 1);
        let event = &events[0].0;
        assert_eq!(event.kind, "ses.spamreport");
        assert_eq!(event.label("event"), Some("spamreport"));
        assert_eq!(event.label("feedback_type"), Some("abuse"));
        assert_eq!(event.label("domain"), Some("example.com"));
        assert_eq!(event.label("reason"), None);
        assert_eq!(
            &*event.raw,
            raw.trim(),
            "one recipient: the notification as sent"
        );
    }

    #[test]
    fn one_event_per_recipient_with_its_own_key_and_raw() {
        let source: Arc<str> = Arc::from("ses");
        let (raw, value) = parsed(
            r#"{"notificationType":"Bounce","mail":{"messageId":"m"},
              "bounce":{"bounceType":"Transient","bounceSubType":"MailboxFull",
                "feedbackId":"f","bouncedRecipients":[
                  {"emailAddress":"a@One.example","diagnosticCode":"452 4.2.2 full"},
                  {"emailAddress":"b@two.example"}]}}"#,
        );
        let events = events(&outer(&source), &raw, &value);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].0.label("domain"), Some("one.example"));
        assert_eq!(events[0].0.label("reason"), Some("4.2.2"));
        assert_eq!(events[0].0.label("bounce_type"), Some("blocked"));
        assert_eq!(
            events[0].0.label("classification"),
            Some("mailbox_unavailable")
        );
        assert_eq!(events[1].0.label("reason"), Some("unknown"));
        assert_ne!(events[0].1, events[1].1);
        assert!(events[0].0.raw.contains("a@One.example"));
        assert!(!events[0].0.raw.contains("b@two.example"));
        assert_eq!(events[0].0.time_ms, 3, "no time anywhere: the envelope's");
    }

    #[test]
    fn other_notification_types() {
        let source: Arc<str> = Arc::from("ses");
        let (raw, delivery) = parsed(
            r#"{"eventType":"Delivery","mail":{"messageId":"m"},
              "delivery":{"recipients":["x@a.example","y@b.example"]}}"#,
        );
        let delivered = events(&outer(&source), &raw, &delivery);
        assert_eq!(delivered.len(), 2);
        assert_eq!(delivered[1].0.kind, "ses.delivered");
        assert_eq!(delivered[1].0.label("domain"), Some("b.example"));

        let (raw, open) = parsed(r#"{"eventType":"Open","mail":{"messageId":"m"}}"#);
        let opened = events(&outer(&source), &raw, &open);
        assert_eq!(&*opened[0].0.raw, raw);
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0].0.kind, "ses.event");
        assert_eq!(opened[0].0.label("event"), Some("open"));
        assert!(!is_notification(
            &serde_json::json!({"notificationType": "Bounce"})
        ));
    }

    #[test]
    fn status_classes_and_classifications() {
        for (text, expected) in [
            ("5.1.1", Some("5.1.1")),
            ("smtp; 550 5.1.1 <a@b>... User", Some("5.1.1")),
            ("smtp; 550 mailbox unavailable", Some("550")),
            ("421 try later", Some("421")),
            ("no code", None),
            ("version 1.2.3", None),
        ] {
            assert_eq!(status_class(text).as_deref(), expected, "{text}");
        }
        for (subtype, class, expected) in [
            ("General", "5.1.1", "invalid_address"),
            ("General", "5.7.1", "reputation"),
            ("General", "5.3.4", "content"),
            ("General", "4.4.7", "technical_failure"),
            ("General", "550", "unclassified"),
            ("NoEmail", "unknown", "invalid_address"),
            ("OnAccountSuppressionList", "5.1.1", "suppressed"),
            ("ContentRejected", "5.7.1", "content"),
        ] {
            assert_eq!(
                classification(subtype, class),
                expected,
                "{subtype} {class}"
            );
        }
    }
}
