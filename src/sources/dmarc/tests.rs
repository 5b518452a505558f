//! The parser over every shared sample, the field cases B11, B12, B15 and B16, and
//! the bombs: each asserts what the events are, or exactly why a body is refused.

use std::io::Write;
use std::sync::Arc;

use super::parse_body;
use crate::event::Event;
use crate::sources::{ParsedBatch, SourceError};

/// The B11 report of the field cases: a stray, never closed `xs:schema` start tag.
pub const B11: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dmarc/cases/b11_stray_xs_schema.xml"
));

/// B12: raw Windows-1252 quotes in a document declared UTF-8, and `<`/`>` in the email.
pub fn b12() -> Vec<u8> {
    let mut xml = Vec::new();
    xml.extend_from_slice(
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n  <report_metadata>\n\
          <org_name>reporter.example.net</org_name>\n\
          <email>DMARC Reports <dmarc@reporter.example.net></email>\n\
          <extra_contact_info>https://reporter.example.net/help?topic=",
    );
    xml.push(0x91);
    xml.extend_from_slice(b"dmarc");
    xml.push(0x92);
    xml.extend_from_slice(
        b"</extra_contact_info>\n<report_id>rpt-0002</report_id>\n\
          <date_range><begin>1700000000</begin><end>1700086399</end></date_range>\n\
          </report_metadata>\n\
          <policy_published><domain>example.com</domain><p>none</p></policy_published>\n\
          <record>\n<row><source_ip>192.0.2.20</source_ip><count>5</count>\n\
          <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf>\
          </policy_evaluated></row>\n\
          <identifiers><header_from>example.com</header_from></identifiers>\n\
          <auth_results><dkim><domain>example.com</domain><result>pass</result></dkim>\
          </auth_results>\n</record>\n</feedback>\n",
    );
    xml
}

/// B16 #2: gzip of the six bytes "unused", as one provider sent for a while.
pub const B16_UNUSED_BASE64: &str = "H4sIAAAAAAAC/yvNKy1OTQEA+UgslAYAAAA=";

/// B16 #3: a valid report whose date range is 48 hours.
pub fn b16_long_range() -> String {
    B11.replace("rpt-0001", "rpt-0004")
        .replace("<end>1700086399</end>", "<end>1700172800</end>")
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn parse(body: &[u8]) -> Result<ParsedBatch, SourceError> {
    parse_body(&Arc::from("dmarc"), body, 1_750_000_000_000)
}

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/dmarc/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn records(batch: &ParsedBatch) -> Vec<&Event> {
    batch
        .events
        .iter()
        .map(|p| &p.event)
        .filter(|e| e.kind == "dmarc.record")
        .collect()
}

fn labels(event: &Event) -> String {
    event
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn raw(event: &Event) -> serde_json::Value {
    serde_json::from_str(&event.raw).unwrap()
}

/// (file, records, messages, labels of the first record, warnings)
type Expected = (
    &'static str,
    usize,
    f64,
    &'static str,
    &'static [&'static str],
);

const SAMPLES: &[Expected] = &[
    (
        "amazonses.com!stalw.art!1663545600!1663632000.xml.gz",
        1,
        1.0,
        "disposition=none dkim=fail dmarc=fail domain=stalw.art network=207.171.188.0/24 \
         org=AMAZON-SES spf=fail",
        &[],
    ),
    (
        "aol_single_quoted_xmlns.xml",
        1,
        1.0,
        "disposition=none dkim=pass dmarc=pass domain=website.com network=125.125.125.0/24 \
         org=AOL spf=pass",
        &[],
    ),
    (
        "empty_reason.xml",
        1,
        2.0,
        "disposition=none dkim=pass dmarc=pass domain=example.com network=198.51.100.0/24 \
         org=example.org spf=fail",
        &[],
    ),
    (
        "estadocuenta1.infonacot.gob.mx!example.com!1536853302!1536939702!2940.xml.zip",
        1,
        1.0,
        "disposition=none dkim=fail dmarc=fail domain=example.com network=148.243.137.0/24 \
         org=XYZ Corporation spf=fail",
        &[],
    ),
    (
        "gmx_dmarc2_namespace_psl.xml",
        1,
        1.0,
        "disposition=none dkim=pass dmarc=pass domain=myserver.com network=11.222.33.0/24 \
         org=GMX spf=pass",
        &[],
    ),
    (
        "google.com!borschow.com!1549929600!1550015999.zip",
        1,
        1.0,
        "disposition=reject dkim=fail dmarc=fail domain=borschow.com network=92.53.116.0/24 \
         org=google.com spf=fail",
        &[],
    ),
    (
        "google.com_nice-input.xml.gz",
        20,
        3047.0,
        "disposition=none dkim=fail dmarc=pass domain=example.com network=209.85.220.0/24 \
         org=google.com spf=pass",
        &[],
    ),
    (
        "hardfail_empty_dkim_fields.xml",
        1,
        1.0,
        "disposition=quarantine dkim=fail dmarc=fail domain=mydomain.org \
         network=42.42.42.0/24 org=reporting org spf=fail",
        &[],
    ),
    (
        "mail.ru!stalw.art!1667865600!1667952000.xml.gz",
        1,
        1.0,
        "disposition=none dkim=fail dmarc=fail domain=stalw.art network=50.223.129.0/24 \
         org=Mail.Ru spf=fail",
        &[],
    ),
    (
        "old_draft_from_wiki.xml",
        1,
        2.0,
        "disposition=none dkim=fail dmarc=pass domain=example.com network=72.150.241.0/24 \
         org=acme.com spf=pass",
        &[],
    ),
    (
        "protection.outlook.com!example.com!1711756800!1711843200.xml",
        1,
        1.0,
        "disposition=none dkim=fail dmarc=fail domain=example.com network=100.24.188.0/24 \
         org=Outlook.com spf=fail",
        &[],
    ),
    (
        "report_with_upper_cased_pass.xml",
        1,
        1.0,
        "disposition=none dkim=pass dmarc=pass domain=example.com network=23.104.41.0/24 \
         org=example.com spf=pass",
        &[
            "report aggr_report_example.com_20191202_1638 from example.com: \
           date range 97h exceeds 24h",
        ],
    ),
    (
        "rfc9990-example.net!example.com!1700000000!1700086399.xml",
        2,
        7.0,
        "disposition=none dkim=pass dmarc=pass domain=example.com network=198.51.100.0/24 \
         org=example.net spf=pass",
        &[],
    ),
    (
        "stalwart_fastmail_trusted_forwarder.xml",
        4,
        9.0,
        "disposition=none dkim=fail dmarc=fail domain=stalw.art network=64.147.108.0/24 \
         org=Fastmail Pty Ltd reason=trusted_forwarder spf=fail",
        &[],
    ),
    (
        "stalwart_v2_extensions_unknown_tags.xml",
        1,
        123.0,
        "disposition=quarantine dkim=pass dmarc=pass domain=example.com \
         network=192.168.4.0/24 org=Sample Reporter spf=fail",
        &[],
    ),
];

#[test]
fn every_sample_gives_its_records() {
    for (file, count, messages, first, warnings) in SAMPLES {
        let batch = parse(&sample(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let found = records(&batch);
        assert_eq!(found.len(), *count, "{file}");
        let weight: f64 = found.iter().map(|e| e.weight).sum();
        assert_eq!(weight, *messages, "{file}");
        let first = first.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(labels(found[0]), first, "{file}");
        assert_eq!(batch.warnings, *warnings, "{file}");
        assert!(batch.skipped.is_empty(), "{file}: {:?}", batch.skipped);
        // One report event first, then the records in order.
        assert_eq!(batch.events[0].event.kind, "dmarc.report", "{file}");
        let positions: Vec<u32> = batch.events.iter().map(|p| p.position).collect();
        assert_eq!(positions, (0..=*count as u32).collect::<Vec<_>>(), "{file}");
    }
}

#[test]
fn samples_keep_what_the_rfc_does_not_name() {
    let batch = parse(&sample(
        "rfc9990-example.net!example.com!1700000000!1700086399.xml",
    ))
    .unwrap();
    let report = raw(&batch.events[0].event);
    assert_eq!(report["version"], "2.0");
    assert_eq!(report["policy"]["np"], "reject");
    assert_eq!(report["policy"]["testing"], "y");
    assert_eq!(report["policy"]["discovery_method"], "treewalk");
    let rejected = records(&batch)[1];
    assert_eq!(rejected.label("reason"), Some("other"));
    assert_eq!(
        raw(rejected)["reasons"][0]["comment"],
        "sender not authorized"
    );
    assert_eq!(rejected.time_ms, 1_700_086_399_000);

    let batch = parse(&sample("google.com_nice-input.xml.gz")).unwrap();
    let v6 = records(&batch)
        .into_iter()
        .find(|e| raw(e)["source_ip"] == "2607:f8b0:4864:20::132")
        .unwrap();
    assert_eq!(v6.label("network"), Some("2607:f8b0:4864:20::/64"));

    let batch = parse(&sample("hardfail_empty_dkim_fields.xml")).unwrap();
    let record = raw(records(&batch)[0]);
    assert_eq!(record["auth_results"]["spf"][0]["result"], "hardfail");
    assert_eq!(record["auth_results"]["dkim"][0]["domain"], "");

    let batch = parse(&sample("mail.ru!stalw.art!1667865600!1667952000.xml.gz")).unwrap();
    assert_eq!(
        batch.events[0].event.provider_id.as_deref(),
        Some("28551467700969547611667865600")
    );
    assert_eq!(
        raw(records(&batch)[0])["auth_results"]["dkim"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let batch = parse(&sample("report_with_upper_cased_pass.xml")).unwrap();
    let record = raw(records(&batch)[0]);
    assert_eq!(record["dkim"], "Pass");
    assert_eq!(record["org_name"], "example.com");

    let batch = parse(&sample("gmx_dmarc2_namespace_psl.xml")).unwrap();
    assert_eq!(
        raw(&batch.events[0].event)["policy"]["discovery_method"],
        "psl"
    );
}

#[test]
fn failure_reports_are_refused_as_not_aggregate() {
    for file in [
        "forensic/dmarc_ruf_report_linkedin.crlf.eml",
        "forensic/exim_plain_text_only_no_arf_part.eml",
    ] {
        let error = parse(&sample(file)).unwrap_err();
        assert!(
            matches!(&error, SourceError::UnsupportedMediaType(m) if m.contains("failure (ruf)")),
            "{file}: {error:?}"
        );
    }
}

#[test]
fn dedup_keys_follow_org_report_and_position() {
    let first = parse(B11.as_bytes()).unwrap();
    let again = parse(&gzip(B11.as_bytes())).unwrap();
    let keys = |b: &ParsedBatch| b.events.iter().map(|p| p.keys).collect::<Vec<_>>();
    assert_eq!(keys(&first), keys(&again));
    let other = parse(b16_long_range().as_bytes()).unwrap();
    assert_ne!(keys(&first), keys(&other));
    assert_ne!(first.events[0].keys, first.events[1].keys);
}

#[test]
fn b11_stray_schema_tag_is_repaired() {
    let batch = parse(B11.as_bytes()).unwrap();
    let found = records(&batch);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].weight, 3.0);
    assert_eq!(
        labels(found[0]),
        "disposition=reject dkim=fail dmarc=fail domain=example.com network=192.0.2.0/24 \
         org=reporter.example.net spf=fail"
    );
    assert_eq!(raw(found[0])["source_ip"], "192.0.2.10");
    assert_eq!(found[0].provider_id.as_deref(), Some("rpt-0001#0"));
    assert_eq!(
        batch.warnings,
        ["report rpt-0001 from reporter.example.net: \
          non-conformant XML repaired: stray xs:schema never closed"]
    );
}

#[test]
fn b12_bad_bytes_and_angle_brackets_keep_the_record() {
    let batch = parse(&b12()).unwrap();
    let found = records(&batch);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].weight, 5.0);
    assert_eq!(raw(found[0])["source_ip"], "192.0.2.20");
    let report = raw(&batch.events[0].event);
    assert_eq!(
        report["email"],
        "DMARC Reports <dmarc@reporter.example.net>"
    );
    assert_eq!(
        report["extra_contact_info"],
        "https://reporter.example.net/help?topic=\u{FFFD}dmarc\u{FFFD}"
    );
    let warnings = batch.warnings.join("\n");
    assert!(warnings.contains("invalid UTF-8"), "{warnings}");
    assert!(warnings.contains("unescaped < in <email>"), "{warnings}");
}

#[test]
fn a_bare_less_than_in_text_does_not_swallow_the_end_tag() {
    let xml = B11.replace(
        "<org_name>reporter.example.net</org_name>",
        "<org_name>a < b</org_name>",
    );
    let batch = parse(xml.as_bytes()).unwrap();
    assert_eq!(records(&batch)[0].label("org"), Some("a < b"));
    assert_eq!(records(&batch)[0].weight, 3.0);
}

#[test]
fn b15_format_is_read_from_the_bytes() {
    let xml = B11.as_bytes();
    let plain = parse(xml).unwrap();
    for body in [
        gzip(xml),
        gzip(&gzip(xml)),
        zip(&[("report.xml", xml)]),
        zip(&[("report.xml.gz", &gzip(xml))]),
        gzip(&zip(&[("inner.zip", &zip(&[("r.xml", xml)]))])),
    ] {
        let batch = parse(&body).unwrap();
        assert_eq!(records(&batch).len(), 1);
        assert_eq!(batch.events[1].keys, plain.events[1].keys);
        assert_eq!(
            batch.events[0].event.provider_id.as_deref(),
            Some("rpt-0001")
        );
    }
    let too_deep = gzip(&gzip(&gzip(&gzip(xml))));
    assert_eq!(
        parse(&too_deep).unwrap_err(),
        SourceError::TooLarge("compressed more than 3 levels deep; refused".into())
    );
}

#[test]
fn b16_each_report_stands_alone() {
    use base64::Engine;
    let unused = base64::engine::general_purpose::STANDARD
        .decode(B16_UNUSED_BASE64)
        .unwrap();
    let error = parse(&unused).unwrap_err();
    assert!(
        matches!(&error, SourceError::UnsupportedMediaType(m)
            if m.starts_with("decompressed content is not XML")),
        "{error:?}"
    );
    let long = parse(b16_long_range().as_bytes()).unwrap();
    assert_eq!(records(&long).len(), 1);
    assert!(
        long.warnings
            .iter()
            .any(|w| w.ends_with("date range 48h exceeds 24h")),
        "{:?}",
        long.warnings
    );

    // In one archive, the bad entry is skipped and the two others are kept, in any order.
    let good = gzip(B11.as_bytes());
    let long_range = b16_long_range();
    let entries = [
        ("1.xml.gz", &good[..]),
        ("2.xml.gz", &unused[..]),
        ("3.xml", long_range.as_bytes()),
    ];
    for order in [[0, 1, 2], [1, 2, 0], [2, 0, 1]] {
        let batch = parse(&zip(&order.map(|i| entries[i]))).unwrap();
        assert_eq!(records(&batch).len(), 2);
        assert_eq!(batch.skipped.len(), 1);
        assert!(batch.skipped[0].contains("decompressed content is not XML"));
        assert!(batch.skipped[0].contains("2.xml.gz"));
    }
}

#[test]
fn bombs_are_refused_within_bounds() {
    // 60 MiB of zeros compress to about 60 KiB: over the size and the ratio limits.
    let zeros = vec![0u8; 60 * 1024 * 1024];
    let started = std::time::Instant::now();
    for bomb in [gzip(&zeros), zip(&[("zeros.xml", &zeros)])] {
        let error = parse(&bomb).unwrap_err();
        assert!(
            matches!(&error, SourceError::TooLarge(m)
                if m.starts_with("decompressed content exceeds")),
            "{error:?}"
        );
    }
    // Within 50 MiB but over 200 times the body.
    let error = parse(&gzip(&vec![b' '; 4 * 1024 * 1024])).unwrap_err();
    assert!(
        matches!(&error, SourceError::TooLarge(m) if m.contains("200 times")),
        "{error:?}"
    );
    let many: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("{i}.xml"), B11.as_bytes().to_vec()))
        .collect();
    let many: Vec<(&str, &[u8])> = many.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    let error = parse(&zip(&many)).unwrap_err();
    assert_eq!(
        error,
        SourceError::TooLarge(
            "zip archive has 40 entries; reports have one, and at most 16 are read".into()
        )
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn entity_declarations_are_refused_and_never_expanded() {
    let mut laughs = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n");
    laughs.push_str(" <!ENTITY lol \"lol\">\n");
    for level in 1..10 {
        let previous = if level == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", level - 1)
        };
        laughs.push_str(&format!(
            " <!ENTITY lol{level} \"{}\">\n",
            format!("&{previous};").repeat(10)
        ));
    }
    laughs.push_str("]>\n");
    laughs.push_str(&B11.replace("<org_name>reporter.example.net", "<org_name>&lol9;"));
    let laughs = laughs.replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "", 1);
    let error = parse(laughs.as_bytes()).unwrap_err();
    assert!(
        matches!(&error, SourceError::BadRequest(m) if m.contains("declares its own entities")),
        "{error:?}"
    );

    // An undeclared reference is kept as text, not looked up anywhere.
    let xml = B11.replace(
        "<org_name>reporter.example.net",
        "<org_name>&ext;x&amp;y&#65;",
    );
    let batch = parse(xml.as_bytes()).unwrap();
    assert_eq!(records(&batch)[0].label("org"), Some("&ext;x&yA"));
}

#[test]
fn what_is_not_a_report_is_refused_with_a_reason() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty body"),
        (b"   \n", "empty body"),
        (
            b"{\"json\": true}",
            "content is not gzip, zip or XML (it starts 7b 22 6a",
        ),
        (
            b"<html><body>hi</body></html>",
            "the root element is <html>, not <feedback>",
        ),
        (b"<?xml version=\"1.0\"?>", "no <feedback> element"),
        (&[0x1f, 0x8b, 0x08, 0x00, 0x01], "gzip data is corrupt"),
        (b"PK\x03\x04garbage", "zip archive is corrupt"),
    ];
    for (body, reason) in cases {
        let error = parse(body).unwrap_err();
        assert!(error.to_string().contains(reason), "{reason}: {error}");
    }
}

#[test]
fn a_truncated_report_keeps_its_complete_records() {
    let xml = std::fs::read_to_string(format!(
        "{}/tests/fixtures/dmarc/stalwart_fastmail_trusted_forwarder.xml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let cut = &xml[..xml.find("<source_ip>64.147.108.173").unwrap()];
    let batch = parse(cut.as_bytes()).unwrap();
    assert_eq!(records(&batch).len(), 2);
    assert!(
        batch
            .warnings
            .iter()
            .any(|w| w.contains("ends before </feedback>"))
    );
    // Cut before the report's id, it is refused.
    let cut = &xml[..xml.find("<report_id>").unwrap() + "<report_id>".len() + 2];
    let error = parse(cut.as_bytes()).unwrap_err();
    assert!(
        error.to_string().contains("ends before its report_id"),
        "{error}"
    );
}

#[test]
fn records_without_a_count_are_skipped_and_counted() {
    let xml = B11.replace("<count>3</count>", "<count>three</count>");
    let batch = parse(xml.as_bytes()).unwrap();
    assert_eq!(records(&batch).len(), 0);
    assert_eq!(
        batch.skipped,
        ["report rpt-0001 from reporter.example.net, record 0: \
          count \"three\" is not a number of messages"]
    );
    // The report itself still counts, so an absence rule sees the reporter.
    assert_eq!(batch.events.len(), 1);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&body);
        }

        #[test]
        fn arbitrary_bytes_wrapped_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            wrapping in 0..3u8,
        ) {
            let wrapped = match wrapping {
                0 => gzip(&body),
                1 => zip(&[("r.xml", &body)]),
                _ => gzip(&zip(&[("r.xml.gz", &gzip(&body))])),
            };
            let _ = parse(&wrapped);
        }

        #[test]
        fn mangled_reports_never_panic(cut in 0..B11.len(), byte in any::<u8>()) {
            let mut xml = B11.as_bytes().to_vec();
            xml[cut] = byte;
            let _ = parse(&xml);
            let _ = parse(&xml[..cut]);
        }
    }
}

#[test]
fn settings_are_checked() {
    let configure = |text: &str| {
        let table: toml::Table = text.parse().unwrap();
        crate::config::SourceSettings::check_alone("sources.dmarc", table, super::configure)
    };
    let source = configure("token = \"t0k\"\n").unwrap();
    assert!(source.is_verified());
    assert_eq!(source.bearer_token(), Some("t0k"));

    let mailbox = "token = \"t\"\n[mailbox]\nhost = \"127.0.0.1\"\nusername = \"u\"\n\
                   password = \"p\"\n";
    assert!(configure(mailbox).is_ok());
    let errors = configure(&format!("{mailbox}tls = \"ssl\"\n")).unwrap_err();
    assert_eq!(
        errors,
        [
            "sources.dmarc.mailbox.tls: expected \"implicit\", \"starttls\" or \"none\", \
          found \"ssl\""
        ]
    );
    let errors = configure(&format!("{mailbox}processed_folder = \"INBOX\"\n")).unwrap_err();
    assert!(errors[0].contains("differ from folder"), "{errors:?}");
    let errors = configure("tokn = \"x\"\n").unwrap_err();
    assert!(errors[0].contains("unknown field `tokn`"), "{errors:?}");
}
