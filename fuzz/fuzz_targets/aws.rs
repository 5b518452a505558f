//! Fuzzes the AWS parsers: an SNS envelope (with whatever its `Message` holds:
//! EventBridge events, SES notifications, text) and an EventBridge API destination body,
//! plus the canonical string SNS signatures are checked over.
#![no_main]

use std::sync::Arc;

use backchannel::sources::aws::sns::Envelope;
use backchannel::sources::aws::{parse_eventbridge_body, parse_sns_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let source: Arc<str> = Arc::from("fuzz");
    if let Ok(batch) = parse_sns_body(&source, data, 0) {
        for parsed in &batch.events {
            assert!(parsed.event.labels.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
    let _ = parse_eventbridge_body(&source, data, 0);
    if let Ok(envelope) = Envelope::from_body(data) {
        let _ = envelope.string_to_sign();
    }
    // The same bytes as the Message of an envelope, so the inner parsers see them too.
    if let Ok(message) = std::str::from_utf8(data) {
        let body = serde_json::json!({
            "Type": "Notification", "MessageId": "m", "Message": message,
            "TopicArn": "arn:aws:sns:us-east-1:1:t", "Timestamp": "2024-01-01T00:00:00Z",
        });
        let batch = parse_sns_body(&source, body.to_string().as_bytes(), 0);
        assert!(batch.is_ok_and(|b| !b.events.is_empty()));
    }
});
