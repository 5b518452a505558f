//! The mapping source with a Mailgun-like map: any bytes are parsed or refused, never
//! a panic, and no label ever holds an address.
#![no_main]

use std::sync::{Arc, OnceLock};

use backchannel::config::SourceSettings;
use backchannel::sources::Backchannel;
use libfuzzer_sys::fuzz_target;

fn source() -> &'static Arc<dyn Backchannel> {
    static SOURCE: OnceLock<Arc<dyn Backchannel>> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let table = toml::from_str(
            r#"
kind = "mailgun.{/event-data/event}"
time = ["/event-data/timestamp", "/at"]
id = "/event-data/id"
labels = { domain = "/event-data/recipient", code = "/event-data/delivery-status/code" }
value = "/used"
limit = "/quota"
"#,
        )
        .expect("the map is TOML");
        SourceSettings::check_alone("sources.m", table, backchannel::sources::mapping::configure)
            .expect("the map is valid")
    })
}

fuzz_target!(|body: &[u8]| {
    if let Ok(batch) = source().parse(&Arc::from("m"), body, 1_700_000_000_000) {
        for parsed in &batch.events {
            assert!(parsed.event.kind.starts_with("mailgun."));
            assert!(parsed.event.labels.iter().all(|(_, v)| !v.contains('@')));
        }
    }
});
