//! Browser report bodies: the parser must answer any bytes with events, skips or a
//! refusal, never a panic, whether every page is allowed or only one origin.
#![no_main]

use std::sync::{Arc, LazyLock};

use backchannel::sources::csp::origins::AllowedOrigins;
use backchannel::sources::csp::parse::parse_body;
use libfuzzer_sys::fuzz_target;

static ANY: LazyLock<AllowedOrigins> =
    LazyLock::new(|| AllowedOrigins::parse(&["*".to_string()]).unwrap());
static ONE: LazyLock<AllowedOrigins> =
    LazyLock::new(|| AllowedOrigins::parse(&["https://app.example.com".to_string()]).unwrap());

fuzz_target!(|body: &[u8]| {
    let source: Arc<str> = Arc::from("csp");
    for allowed in [&*ANY, &*ONE] {
        if let Ok(batch) = parse_body(&source, allowed, body, 1_700_000_000_000) {
            for parsed in &batch.events {
                // Labels are sorted, and raw is one JSON object, whatever came in.
                let labels = &parsed.event.labels;
                assert!(labels.windows(2).all(|w| w[0].0 < w[1].0));
                let raw: serde_json::Value = serde_json::from_str(&parsed.event.raw).unwrap();
                assert!(raw.is_object());
            }
        }
    }
});
