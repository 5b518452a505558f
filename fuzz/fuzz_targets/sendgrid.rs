//! Arbitrary bytes as a SendGrid Event Webhook body: the parser must answer (events,
//! skips or a refusal) without panicking, and every event it keeps must be well formed.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let source: Arc<str> = Arc::from("sendgrid");
    if let Ok(batch) = backchannel::sources::sendgrid::parse_batch(&source, body, 1_700_000_000_000)
    {
        for parsed in batch.events {
            assert!(parsed.event.kind.starts_with("sendgrid."));
            assert!(parsed.event.weight.is_finite());
            assert!(parsed.event.labels.windows(2).all(|w| w[0].0 <= w[1].0));
        }
    }
});
