//! DMARC report bodies of any bytes: unpacking and the forgiving XML reader must never
//! panic, whatever they are given, and each body's work is bounded by the unpack limits.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let source: Arc<str> = Arc::from("dmarc");
    let _ = backchannel::sources::dmarc::parse_body(&source, body, 1_700_000_000_000);
});
