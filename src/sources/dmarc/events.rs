//! A read report into events: one `dmarc.report` per report, and one `dmarc.record` per
//! record weighted by its message count.
//!
//! Values outside the RFC are kept: results and dispositions become lowercase slugs
//! (`Pass` is `pass`, `hardfail` stays `hardfail`), missing ones are `unknown`. The
//! source address is an attribute; its network (`/24` for IPv4, `/64` for IPv6) is also
//! a label, since senders come in a few pools per domain and rule groups with an empty
//! window are forgotten, so a spoofing burst from many networks costs memory only while
//! it lasts.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::xml::{AuthResult, Record, Report};
use crate::event::{Event, Label};
use crate::sources::{ParsedBatch, ParsedEvent, dedup_key};

/// Latest Unix second a date range may name (the end of year 9999).
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// Longest span a report should cover (RFC 7489 section 7.2: SHOULD be one day).
const DAY_SECONDS: i64 = 86_400;

/// Adds the events of `report` (read from `document`) to `batch`, numbering them from
/// `*position`.
pub fn push_report(
    source: &Arc<str>,
    report: &Report,
    document: &[u8],
    received_ms: i64,
    position: &mut u32,
    batch: &mut ParsedBatch,
) {
    let mut warnings = report.repairs.clone();
    let org = match report
        .org_name
        .as_deref()
        .map(collapse)
        .filter(|o| !o.is_empty())
    {
        Some(org) => org,
        None => {
            let fallback = report
                .email
                .as_deref()
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, domain)| domain.trim_end_matches('>').trim().to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "unknown".into());
            warnings.push(format!("no org_name; {fallback:?} stands in"));
            fallback
        }
    };
    let org = clip(&org, 64);
    let report_id = match report.report_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => {
            let digest = Sha256::digest(document);
            warnings.push("no report_id; deduplicated by the report's content".into());
            format!("sha256:{}", hex::encode(&digest[..16]))
        }
    };

    let begin = report.begin.as_deref().and_then(unix_seconds);
    let end = report.end.as_deref().and_then(unix_seconds);
    match (begin, end) {
        (Some(begin), Some(end)) if end < begin => {
            warnings.push("date range ends before it begins".into());
        }
        (Some(begin), Some(end)) if end - begin > DAY_SECONDS => {
            let hours = ((end - begin) as f64 / 3600.0).round() as i64;
            warnings.push(format!("date range {hours}h exceeds 24h"));
        }
        (Some(_), Some(_)) => {}
        _ => warnings.push("no usable date range; the time received stands in".into()),
    }
    let time_ms = end.or(begin).map_or(received_ms, |s| s * 1000);

    let policy_domain = report.policy("domain").map(domain).unwrap_or_default();
    let policy: Map<String, Value> = report
        .policy
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    let common = Common {
        source,
        org: &org,
        report_id: &report_id,
        policy_domain: &policy_domain,
        time_ms,
    };

    let mut records = Vec::with_capacity(report.records.len());
    let mut messages = 0.0;
    for (index, record) in report.records.iter().enumerate() {
        match record_event(&common, record, index) {
            Ok(event) => {
                messages += event.weight;
                records.push((index, event));
            }
            Err(reason) => batch.skipped.push(format!(
                "report {report_id} from {org}, record {index}: {reason}"
            )),
        }
    }

    let raw = json!({
        "org_name": org,
        "email": report.email,
        "extra_contact_info": report.extra_contact_info,
        "report_id": report_id,
        "begin": begin,
        "end": end,
        "version": report.version,
        "generator": report.generator,
        "errors": report.errors,
        "policy_domain": policy_domain,
        "policy": policy,
        "records": report.records.len(),
        "messages": messages,
        "warnings": warnings,
    });
    let mut labels: Vec<Label> = vec![
        (
            Cow::Borrowed("domain"),
            Cow::Owned(or_unknown(&policy_domain)),
        ),
        (Cow::Borrowed("org"), Cow::Owned(org.clone())),
    ];
    labels.sort();
    batch.events.push(ParsedEvent {
        position: next(position),
        event: Event {
            source: source.clone(),
            kind: Cow::Borrowed("dmarc.report"),
            time_ms,
            weight: 1.0,
            value: None,
            limit: None,
            labels,
            provider_id: Some(report_id.clone()),
            traceparent: None,
            raw: raw.to_string().into_boxed_str(),
        },
        keys: Some(dedup_key(source, &["report", &org, &report_id])),
    });
    for (index, event) in records {
        batch.events.push(ParsedEvent {
            position: next(position),
            event,
            keys: Some(dedup_key(
                source,
                &["record", &org, &report_id, &index.to_string()],
            )),
        });
    }
    for warning in warnings {
        batch
            .warnings
            .push(format!("report {report_id} from {org}: {warning}"));
    }
}

fn next(position: &mut u32) -> u32 {
    let current = *position;
    *position += 1;
    current
}

/// What every record of a report shares.
struct Common<'a> {
    source: &'a Arc<str>,
    org: &'a str,
    report_id: &'a str,
    policy_domain: &'a str,
    time_ms: i64,
}

fn record_event(common: &Common<'_>, record: &Record, index: usize) -> Result<Event, String> {
    let count = record.count.as_deref().ok_or("no <count>")?;
    let weight = count
        .parse::<u64>()
        .map(|n| n as f64)
        .or_else(|_| count.parse::<f64>())
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("count {count:?} is not a number of messages"))?;

    let address = record.source_ip.as_deref().and_then(parse_ip);
    let network = address.map(network_of);
    let dkim = result_slug(record.dkim.as_deref());
    let spf = result_slug(record.spf.as_deref());
    let dmarc = if dkim == "pass" || spf == "pass" {
        "pass"
    } else {
        "fail"
    };
    let header_from = record
        .header_from
        .as_deref()
        .map(domain)
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| common.policy_domain.to_string());
    let reason = record
        .reasons
        .iter()
        .filter_map(|r| r.kind.as_deref())
        .map(|kind| slug(kind, 40))
        .find(|kind| !kind.is_empty());

    let mut labels: Vec<Label> = vec![
        (
            Cow::Borrowed("disposition"),
            result_slug(record.disposition.as_deref()),
        ),
        (Cow::Borrowed("dkim"), dkim),
        (Cow::Borrowed("dmarc"), Cow::Borrowed(dmarc)),
        (
            Cow::Borrowed("domain"),
            Cow::Owned(or_unknown(&header_from)),
        ),
        (Cow::Borrowed("org"), Cow::Owned(common.org.to_string())),
        (Cow::Borrowed("spf"), spf),
    ];
    if let Some(network) = &network {
        labels.push((Cow::Borrowed("network"), Cow::Owned(network.clone())));
    }
    if let Some(reason) = reason {
        labels.push((Cow::Borrowed("reason"), Cow::Owned(reason)));
    }
    labels.sort();

    let reasons: Vec<Value> = record
        .reasons
        .iter()
        .map(|r| json!({"type": r.kind, "comment": r.comment}))
        .collect();
    let auth = |results: &[AuthResult]| -> Vec<Value> {
        results
            .iter()
            .map(|r| {
                Value::Object(
                    r.fields
                        .iter()
                        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                        .collect(),
                )
            })
            .collect()
    };
    let raw = json!({
        "org_name": common.org,
        "report_id": common.report_id,
        "record": index,
        "source_ip": address.map(|a| a.to_string()).or_else(|| record.source_ip.clone()),
        "network": network,
        "count": weight,
        "disposition": record.disposition,
        "dkim": record.dkim,
        "spf": record.spf,
        "reasons": reasons,
        "header_from": record.header_from,
        "envelope_from": record.envelope_from,
        "envelope_to": record.envelope_to,
        "policy_domain": common.policy_domain,
        "auth_results": {
            "dkim": auth(&record.dkim_results),
            "spf": auth(&record.spf_results),
        },
    });
    Ok(Event {
        source: common.source.clone(),
        kind: Cow::Borrowed("dmarc.record"),
        time_ms: common.time_ms,
        weight,
        value: None,
        limit: None,
        labels,
        provider_id: Some(format!("{}#{index}", common.report_id)),
        traceparent: None,
        raw: raw.to_string().into_boxed_str(),
    })
}

/// A source address; an IPv4 address written as IPv6 (`::ffff:192.0.2.1`) is IPv4.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let address: IpAddr = text.trim().parse().ok()?;
    Some(match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    })
}

/// The `/24` of an IPv4 address or the `/64` of an IPv6 one, in CIDR notation.
pub fn network_of(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(bits))
        }
    }
}

/// A result or disposition as a label: lowercase, `unknown` when missing or empty.
fn result_slug(value: Option<&str>) -> Cow<'static, str> {
    let slug = value.map(|v| slug(v, 40)).unwrap_or_default();
    match slug.as_str() {
        "" => Cow::Borrowed("unknown"),
        "pass" => Cow::Borrowed("pass"),
        "fail" => Cow::Borrowed("fail"),
        "none" => Cow::Borrowed("none"),
        "quarantine" => Cow::Borrowed("quarantine"),
        "reject" => Cow::Borrowed("reject"),
        _ => Cow::Owned(slug),
    }
}

/// Lowercase ASCII letters, digits, `.`, `_` and `-`; anything else becomes `_`.
fn slug(text: &str, max_chars: usize) -> String {
    text.trim()
        .chars()
        .take(max_chars)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '_',
        })
        .collect()
}

/// A domain as a label: lowercase, without a trailing dot.
fn domain(text: &str) -> String {
    clip(text.trim().trim_end_matches('.'), 253).to_ascii_lowercase()
}

fn or_unknown(text: &str) -> String {
    if text.is_empty() {
        "unknown".into()
    } else {
        text.to_string()
    }
}

/// Whitespace runs collapsed to one space (`"example.com "` is `"example.com"`).
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn clip(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Unix seconds a clock could have written.
fn unix_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    let seconds = text.parse::<i64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f as i64)
    })?;
    (0..=MAX_UNIX_SECONDS).contains(&seconds).then_some(seconds)
}
