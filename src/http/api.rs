//! The REST API under `/api/v1`: what arrived, read back from the journal.
//!
//! Events are not stored a second time for the API: the journal keeps each accepted body
//! with the positions of its new events, and the source's parser reads them again, so
//! the API shows exactly what the rules saw.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::{ApiError, AppState};
use crate::event::Event;
use crate::rules::kind_matches;

/// Most events one request returns.
const MAX_LIMIT: usize = 1000;
/// Batches read back per request at most, and their body bytes: a filter that matches
/// nothing must not read the whole journal in one request. The answer's `next` says
/// where to go on.
const SCAN_BATCHES: i64 = 2000;
const SCAN_BYTES: i64 = 64 * 1024 * 1024;

/// Checks the API token, when one is configured.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match &state.api_token {
        None => Ok(()),
        Some(auth) => auth.check_headers(headers).map_err(|what| {
            metrics::counter!("backchannel_api_rejected_total").increment(1);
            ApiError::new(StatusCode::UNAUTHORIZED, format!("api: {what}"))
        }),
    }
}

/// What `GET /api/v1/events` filters by.
#[derive(Debug, Default)]
struct Filter {
    sources: Vec<String>,
    kinds: Vec<String>,
    labels: Vec<(String, String)>,
    limit: usize,
    before: Option<i64>,
}

fn filter(query: Option<&str>) -> Result<Filter, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let mut filter = Filter {
        limit: 100,
        ..Filter::default()
    };
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "source" => filter.sources.push(value.into_owned()),
            "kind" => filter.kinds.push(value.into_owned()),
            "label" => {
                let Some((label, wanted)) = value.split_once(':') else {
                    return Err(bad(format!(
                        "label: expected name:value such as domain:example.com, found {value:?}"
                    )));
                };
                filter.labels.push((label.to_string(), wanted.to_string()));
            }
            "limit" => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad(format!("limit: expected 1 to {MAX_LIMIT}, found {value:?}"))
                    })?;
            }
            "before" => {
                filter.before = Some(value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    bad(format!(
                        "before: expected the `next` value of a previous answer, found {value:?}"
                    ))
                })?);
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?}; expected source, kind, label, limit or before"
                )));
            }
        }
    }
    Ok(filter)
}

impl Filter {
    fn matches(&self, event: &Event) -> bool {
        (self.sources.is_empty() || self.sources.iter().any(|s| **s == *event.source))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| kind_matches(k, &event.kind)))
            && self
                .labels
                .iter()
                .all(|(name, value)| event.label(name) == Some(value.as_str()))
    }
}

fn time_text(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// `GET /api/v1/events`: recent events, newest first.
pub async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let filter = filter(query.as_deref())?;
    let one_source = match filter.sources.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    };
    let mut before = filter.before.unwrap_or(i64::MAX);
    let mut found = Vec::new();
    let mut scanned = 0;
    let mut next = None;
    'scan: while scanned < SCAN_BATCHES {
        let batches = state
            .store
            .batches_before(before, one_source, 64, SCAN_BYTES / 8)
            .await
            .map_err(|error| {
                tracing::error!(error = %error, "reading the journal for the events API failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the journal could not be read",
                )
            })?;
        if batches.is_empty() {
            break;
        }
        for batch in batches {
            scanned += 1;
            before = batch.id;
            if !filter.sources.is_empty() && !filter.sources.contains(&batch.source) {
                continue;
            }
            let Some(source) = state.sources.get(&batch.source) else {
                continue;
            };
            let Ok(parsed) = source.parse(&batch.body, batch.received_ms) else {
                continue;
            };
            let mut events: Vec<_> = parsed
                .events
                .into_iter()
                .filter(|e| {
                    batch
                        .accepted
                        .as_ref()
                        .is_none_or(|a| a.contains(&e.position))
                })
                .map(|e| e.event)
                .filter(|e| filter.matches(e))
                .collect();
            // Newest first: later positions of a batch arrived later.
            events.reverse();
            for event in events {
                found.push(render(&event, batch.received_ms, source));
                if found.len() >= filter.limit {
                    // The rest of this batch is skipped; paging resumes after it.
                    next = Some(batch.id);
                    break 'scan;
                }
            }
        }
    }
    if next.is_none() && scanned >= SCAN_BATCHES {
        next = Some(before);
    }
    Ok(Json(json!({
        "events": found,
        "next": next,
    })))
}

fn render(event: &Event, received_ms: i64, source: &crate::sources::Source) -> Value {
    let labels: Map<String, Value> = event
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let mut passthrough = source.backchannel.passthrough(event);
    if let Some(traceparent) = &event.traceparent {
        passthrough.insert("traceparent".into(), Value::String(traceparent.clone()));
    }
    let attributes = serde_json::from_str::<Value>(&event.raw).unwrap_or(Value::Null);
    json!({
        "source": &*event.source,
        "kind": &*event.kind,
        "time": time_text(event.time_ms),
        "received": time_text(received_ms),
        "weight": event.weight,
        "value": event.value,
        "limit": event.limit,
        "labels": labels,
        "provider_id": event.provider_id,
        "passthrough": passthrough,
        "attributes": attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_read_and_bad_ones_explained() {
        let f = filter(Some("source=sg&kind=csp.*&label=domain:a.com&limit=5")).unwrap();
        assert_eq!(f.sources, ["sg"]);
        assert_eq!(f.labels, [("domain".to_string(), "a.com".to_string())]);
        assert_eq!(f.limit, 5);
        assert!(kind_matches(&f.kinds[0], "csp.violation"));
        assert!(!kind_matches("csp.violation", "csp.violations"));
        for (query, expected) in [
            ("limit=0", "limit: expected 1 to 1000"),
            ("label=domain", "label: expected name:value"),
            ("colour=red", "unknown parameter \"colour\""),
            ("before=x", "before: expected"),
        ] {
            let error = filter(Some(query)).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert!(
                error.message.starts_with(expected),
                "{query}: {}",
                error.message
            );
        }
    }
}
