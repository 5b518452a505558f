//! Alertmanager notifications: any bytes are parsed or refused, never a panic, and
//! every alert is either an event of one of the two kinds or a counted skip.
#![no_main]

use std::sync::Arc;

use backchannel::sources::alertmanager::{DEFAULT_LABELS, FIRING, RESOLVED, parse_notification};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let labels: Vec<String> = DEFAULT_LABELS.iter().map(|s| s.to_string()).collect();
    if let Ok(batch) = parse_notification(&Arc::from("am"), &labels, body, 1_700_000_000_000) {
        for parsed in &batch.events {
            assert!(parsed.event.kind == FIRING || parsed.event.kind == RESOLVED);
            assert!(parsed.event.labels.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
});
