//! backchannel's own event format: any bytes are parsed or refused, never a panic, and
//! accepted events keep the format's limits on labels.
#![no_main]

use std::sync::Arc;

use backchannel::sources::webhook::Format;
use backchannel::sources::webhook::format::{MAX_LABEL_VALUE, MAX_LABELS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let format = Format::default();
    if let Ok(batch) = format.parse(&Arc::from("up"), body, 1_700_000_000_000) {
        for parsed in &batch.events {
            assert!(parsed.event.labels.len() <= MAX_LABELS);
            for (_, value) in &parsed.event.labels {
                assert!(value.chars().count() <= MAX_LABEL_VALUE);
            }
            assert!(parsed.event.raw.trim_start().starts_with('{'));
        }
    }
});

