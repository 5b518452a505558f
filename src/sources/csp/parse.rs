//! Browser report bodies into common events.
//!
//! Two shapes arrive, whatever the `Content-Type` says (browsers and proxies vary), so
//! the shape is read from the body's first byte:
//! - `{`: one report. The legacy `report-uri` form `{"csp-report": {...}}` (hyphenated
//!   keys), the same fields without the wrapper, or a single Reporting API report.
//! - `[`: a Reporting API batch, `[{"type", "url", "age", "user_agent", "body"}, ...]`,
//!   with CSP violations next to deprecation, intervention, crash and network-error
//!   reports. Each report is read on its own: a bad one is skipped and counted.
//!
//! Field names are matched without regard to case, `-` or `_`, so `document-uri`
//! (report-uri), `documentURL` (Reporting API) and `document_uri` (some proxies) are one
//! field. The event's raw JSON holds the normalised fields under one set of names, plus
//! the report as the browser sent it under `report`, so templates read the same names
//! whichever form a browser used.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::json::{field, integer, text};
use super::normalise;
use super::origins::AllowedOrigins;
use crate::event::{Event, Label};
use crate::sources::loose::split_array;
use crate::sources::{ParsedBatch, ParsedEvent, SourceError, dedup_key};

/// Ages beyond this are not believed: browsers drop reports long before.
const MAX_AGE_MS: i64 = 24 * 3600 * 1000;

/// What one report became.
enum Outcome {
    Event(Box<ParsedEvent>),
    /// The page is not on the allow-list; the text says which origin it was.
    Refused(String),
}

/// Parses a whole request body. `received_ms` dates legacy reports, and Reporting API
/// reports together with their `age`.
pub fn parse_body(
    source: &Arc<str>,
    allowed: &AllowedOrigins,
    body: &[u8],
    received_ms: i64,
) -> Result<ParsedBatch, SourceError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let refused = |what: &str| {
        SourceError::Forbidden(format!(
            "source {source:?}: reports for {what} are not taken (allowed_origins)"
        ))
    };
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(SourceError::BadRequest(format!(
            "source {source:?}: empty body"
        ))),
        Some(b'{') => {
            let report: Value = serde_json::from_slice(body).map_err(|e| {
                SourceError::BadRequest(format!("source {source:?}: body is not JSON: {e}"))
            })?;
            let mut batch = ParsedBatch::default();
            match parse_report(source, allowed, &report, 0, received_ms, &mut batch) {
                Ok(Outcome::Event(event)) => batch.events.push(*event),
                Ok(Outcome::Refused(what)) => return Err(refused(&what)),
                Err(reason) => {
                    return Err(SourceError::BadRequest(format!(
                        "source {source:?}: {reason}"
                    )));
                }
            }
            Ok(batch)
        }
        Some(b'[') => {
            let reports: Vec<&[u8]> = match serde_json::from_slice::<Vec<&RawValue>>(body) {
                Ok(all) => all.into_iter().map(|r| r.get().as_bytes()).collect(),
                // One report is broken inside (invalid UTF-8, a bad escape): find the
                // reports by structure so the others survive it.
                Err(error) => split_array(body).ok_or_else(|| {
                    SourceError::BadRequest(format!(
                        "source {source:?}: body is not a JSON array of reports: {error}"
                    ))
                })?,
            };
            if reports.is_empty() {
                return Err(SourceError::BadRequest(format!(
                    "source {source:?}: the array holds no report"
                )));
            }
            let mut batch = ParsedBatch::default();
            let mut first_refused = None;
            for (position, text) in reports.into_iter().enumerate() {
                let outcome = serde_json::from_slice::<Value>(text)
                    .map_err(|e| format!("not JSON: {e}"))
                    .and_then(|report| {
                        parse_report(
                            source,
                            allowed,
                            &report,
                            position as u32,
                            received_ms,
                            &mut batch,
                        )
                    });
                match outcome {
                    Ok(Outcome::Event(event)) => batch.events.push(*event),
                    Ok(Outcome::Refused(what)) => {
                        batch.skipped.push(format!(
                            "report {position}: {what} is not in allowed_origins"
                        ));
                        first_refused.get_or_insert(what);
                    }
                    Err(reason) => batch.skipped.push(format!("report {position}: {reason}")),
                }
            }
            match first_refused {
                Some(what) if batch.events.is_empty() => Err(refused(&what)),
                _ => Ok(batch),
            }
        }
        Some(_) => Err(SourceError::BadRequest(format!(
            "source {source:?}: expected a JSON object or array of reports"
        ))),
    }
}

/// One report, in whichever form it came.
fn parse_report(
    source: &Arc<str>,
    allowed: &AllowedOrigins,
    report: &Value,
    position: u32,
    received_ms: i64,
    batch: &mut ParsedBatch,
) -> Result<Outcome, String> {
    let Value::Object(object) = report else {
        return Err("expected a JSON object".into());
    };
    if let Some(inner) = field(object, &["cspreport"]) {
        let Value::Object(inner) = inner else {
            return Err("\"csp-report\" is not an object".into());
        };
        return csp_violation(source, allowed, inner, None, report, position, received_ms);
    }
    let Some(kind) = field(object, &["type"]) else {
        if field(object, &["documenturi", "documenturl"]).is_some() {
            // The legacy fields without their wrapper, as some proxies forward them.
            return csp_violation(source, allowed, object, None, report, position, received_ms);
        }
        return Err("expected a \"csp-report\" or a Reporting API report with a \"type\"".into());
    };
    let kind = text(kind).ok_or("\"type\" is not text")?;
    let envelope = Envelope::read(object, received_ms);
    if let Some(note) = &envelope.age_note {
        batch.warnings.push(format!("report {position}: {note}"));
    }
    let empty = Map::new();
    let body = match field(object, &["body"]) {
        Some(Value::Object(body)) => body,
        None | Some(Value::Null) => &empty,
        Some(_) => return Err("\"body\" is not an object".into()),
    };
    if kind == "csp-violation" {
        if body.is_empty() {
            return Err("csp-violation report without a body".into());
        }
        return csp_violation(
            source,
            allowed,
            body,
            Some(&envelope),
            report,
            position,
            received_ms,
        );
    }
    other_report(source, allowed, &kind, body, &envelope, position)
}

/// The Reporting API's wrapper around a report body.
struct Envelope {
    url: Option<String>,
    user_agent: Option<String>,
    age_ms: Option<i64>,
    time_ms: i64,
    age_note: Option<String>,
}

impl Envelope {
    fn read(object: &Map<String, Value>, received_ms: i64) -> Self {
        let age = field(object, &["age"]).and_then(integer);
        let (time_ms, age_note) = match age {
            None => (received_ms, None),
            Some(age) if (0..=MAX_AGE_MS).contains(&age) => (received_ms - age, None),
            Some(age) => (
                received_ms,
                Some(format!("age {age} ms is not believable; dated on arrival")),
            ),
        };
        Self {
            url: field(object, &["url"]).and_then(text),
            user_agent: field(object, &["useragent"]).and_then(text),
            age_ms: age,
            time_ms,
            age_note,
        }
    }
}

fn csp_violation(
    source: &Arc<str>,
    allowed: &AllowedOrigins,
    body: &Map<String, Value>,
    envelope: Option<&Envelope>,
    report: &Value,
    position: u32,
    received_ms: i64,
) -> Result<Outcome, String> {
    let get = |names: &[&str]| field(body, names).and_then(text);
    let document_url =
        get(&["documenturl", "documenturi"]).or_else(|| envelope.and_then(|e| e.url.clone()));
    if !allowed.allows_document(document_url.as_deref()) {
        return Ok(Outcome::Refused(refused_name(document_url.as_deref())));
    }
    let blocked_url = get(&["blockedurl", "blockeduri"]);
    let effective = get(&["effectivedirective"]);
    let violated = get(&["violateddirective"]);
    let disposition = normalise::disposition(get(&["disposition"]).as_deref());
    let directive = normalise::directive(effective.as_deref(), violated.as_deref());
    let blocked = normalise::blocked(blocked_url.as_deref());
    let (host, path) = normalise::host_and_path(document_url.as_deref());
    let source_file = get(&["sourcefile"]);
    let line = field(body, &["linenumber", "line"]).and_then(integer);
    let column = field(body, &["columnnumber", "column"]).and_then(integer);
    let time_ms = envelope.map_or(received_ms, |e| e.time_ms);

    // A violation has no id. What the browser reports about it, dated to the second it
    // happened, is the same in both forms and when the Reporting API retries an upload
    // (its `age` grows by as much as the delay). The same violation from two visitors
    // within one second therefore counts once.
    // FIXME: a retry whose arrival jitter crosses a second boundary counts twice; only a
    // report id from the browser would lift both limits, and none sends one.
    let number = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    let key = dedup_key(
        source,
        &[
            "csp-violation",
            document_url.as_deref().unwrap_or(""),
            blocked_url.as_deref().unwrap_or(""),
            &directive,
            disposition,
            source_file.as_deref().unwrap_or(""),
            &number(line),
            &number(column),
            &time_ms.div_euclid(1000).to_string(),
        ],
    );

    let mut raw = Map::new();
    raw.insert("type".into(), json!("csp-violation"));
    let format = if envelope.is_some() {
        "report-to"
    } else {
        "report-uri"
    };
    raw.insert("format".into(), json!(format));
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            raw.insert(name.into(), value);
        }
    };
    put("document_url", document_url.map(Value::from));
    put("blocked_url", blocked_url.map(Value::from));
    put("blocked", Some(Value::from(blocked.as_str())));
    put("directive", Some(Value::from(directive.as_str())));
    // The names are the Reporting API's, which has no violated directive: the legacy
    // one serves only to find the directive, and stays in `report`. An empty referrer
    // is no referrer, whichever form says it.
    put("effective_directive", effective.map(Value::from));
    put("disposition", Some(Value::from(disposition)));
    put("original_policy", get(&["originalpolicy"]).map(Value::from));
    put(
        "referrer",
        get(&["referrer", "referer"])
            .filter(|r| !r.is_empty())
            .map(Value::from),
    );
    put(
        "status_code",
        field(body, &["statuscode"])
            .and_then(integer)
            .map(Value::from),
    );
    put("source_file", source_file.map(Value::from));
    put("line_number", line.map(Value::from));
    put("column_number", column.map(Value::from));
    put("sample", get(&["sample", "scriptsample"]).map(Value::from));
    if let Some(envelope) = envelope {
        put("user_agent", envelope.user_agent.clone().map(Value::from));
        put("age_ms", envelope.age_ms.map(Value::from));
    }
    put("report", Some(report.clone()));

    let labels = sorted(vec![
        label("blocked", blocked),
        label("directive", directive),
        label("disposition", disposition.to_string()),
        label("host", host),
        label("path", path),
    ]);
    Ok(event(
        source,
        Cow::Borrowed(super::CSP_VIOLATION),
        time_ms,
        labels,
        raw,
        position,
        key,
    ))
}

/// Deprecation, intervention, crash, network-error and report types not known yet.
fn other_report(
    source: &Arc<str>,
    allowed: &AllowedOrigins,
    kind: &str,
    body: &Map<String, Value>,
    envelope: &Envelope,
    position: u32,
) -> Result<Outcome, String> {
    let kind_name = kind_of(kind).ok_or_else(|| format!("report type {kind:?} is not a name"))?;
    if !allowed.allows_document(envelope.url.as_deref()) {
        return Ok(Outcome::Refused(refused_name(envelope.url.as_deref())));
    }
    let get = |names: &[&str]| field(body, names).and_then(text);
    let mut labels = Vec::with_capacity(5);
    let place = match kind {
        // A network error is about the request that failed, which NEL reports in the
        // body when it is not the page itself.
        "network-error" => get(&["url"]).or_else(|| envelope.url.clone()),
        _ => envelope.url.clone(),
    };
    let (host, path) = normalise::host_and_path(place.as_deref());
    labels.push(label("host", host));
    labels.push(label("path", path));
    match kind {
        "deprecation" | "intervention" => {
            labels.push(label("feature", name_label(get(&["id"]).as_deref())));
        }
        "crash" => labels.push(label("reason", name_label(get(&["reason"]).as_deref()))),
        "network-error" => {
            labels.push(label("error", name_label(get(&["type"]).as_deref())));
            labels.push(label("phase", name_label(get(&["phase"]).as_deref())));
            if let Some(status) = field(body, &["statuscode"]).and_then(integer) {
                labels.push(label("status", status.clamp(0, 999).to_string()));
            }
        }
        _ => {}
    }

    let body_value = Value::Object(body.clone());
    let key = dedup_key(
        source,
        &[
            "report",
            kind,
            envelope.url.as_deref().unwrap_or(""),
            &body_value.to_string(),
            &envelope.time_ms.div_euclid(1000).to_string(),
        ],
    );
    let mut raw = Map::new();
    raw.insert("type".into(), json!(kind));
    raw.insert("format".into(), json!("report-to"));
    if let Some(url) = &envelope.url {
        raw.insert("url".into(), json!(url));
    }
    if let Some(agent) = &envelope.user_agent {
        raw.insert("user_agent".into(), json!(agent));
    }
    if let Some(age) = envelope.age_ms {
        raw.insert("age_ms".into(), json!(age));
    }
    raw.insert("body".into(), body_value);
    Ok(event(
        source,
        kind_name,
        envelope.time_ms,
        sorted(labels),
        raw,
        position,
        key,
    ))
}

/// The event kind of a Reporting API type: the documented ones by name, others as
/// `browser.<type>` with `-` as `_`. `None` for a type that is not a plain name.
fn kind_of(kind: &str) -> Option<Cow<'static, str>> {
    if let Some(known) = super::KNOWN_KINDS.iter().find(|k| {
        k.strip_prefix("browser.")
            .is_some_and(|k| k == kind.replace('-', "_"))
    }) {
        return Some(Cow::Borrowed(known));
    }
    let valid = !kind.is_empty()
        && kind.len() <= 60
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    valid.then(|| Cow::Owned(format!("browser.{}", kind.replace('-', "_"))))
}

/// A feature id, crash reason or error type as a label: names only (`websql`,
/// `NavigatorVibrate`, `http.error`); anything else is `other`, nothing `unknown`.
fn name_label(value: Option<&str>) -> String {
    match value.map(str::trim) {
        None | Some("") => "unknown".into(),
        Some(name)
            if name.len() <= 100
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            name.to_string()
        }
        Some(_) => "other".into(),
    }
}

/// The page a refused report was about, short enough to say in an answer.
fn refused_name(document_url: Option<&str>) -> String {
    match document_url {
        None => "a report without a document URL".into(),
        Some(url) => match normalise::origin(url) {
            Some(origin) => format!("pages at {}", origin.chars().take(100).collect::<String>()),
            None => "a document that is not a URL".into(),
        },
    }
}

fn event(
    source: &Arc<str>,
    kind: Cow<'static, str>,
    time_ms: i64,
    labels: Vec<Label>,
    raw: Map<String, Value>,
    position: u32,
    key: i64,
) -> Outcome {
    Outcome::Event(Box::new(ParsedEvent {
        position,
        event: Event {
            source: source.clone(),
            kind,
            time_ms,
            weight: 1.0,
            value: None,
            limit: None,
            labels,
            provider_id: None,
            traceparent: None,
            raw: Value::Object(raw).to_string().into(),
        },
        keys: Some(key),
    }))
}

fn label(name: &'static str, value: String) -> Label {
    (Cow::Borrowed(name), Cow::Owned(value))
}

fn sorted(mut labels: Vec<Label>) -> Vec<Label> {
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    labels
}
