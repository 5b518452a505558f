//! CORS for `/ingest/{source}`: browsers post reports (the Reporting API) from the
//! page's origin, and ask first with a preflight when the endpoint is on another origin.
//!
//! Which origins a source takes is the source's to say
//! ([`Backchannel::cors_allow_origin`](crate::sources::Backchannel::cors_allow_origin));
//! this file only speaks the protocol. Sources that take no posts from pages (every
//! provider webhook) keep refusing preflights, so a page cannot post to them from a
//! browser with a JSON content type.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE_SECS: &str = "86400";

/// `OPTIONS /ingest/{source}`.
pub async fn preflight(
    State(state): State<Arc<AppState>>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(source) = state.sources.get(&source_id) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no source named {source_id:?}"),
        )
        .into_response();
    };
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Not a preflight: say which methods the route has.
        return (StatusCode::NO_CONTENT, [(header::ALLOW, "OPTIONS, POST")]).into_response();
    };
    let Some(allow) = source
        .backchannel
        .cors_allow_origin(origin)
        .and_then(|allow| HeaderValue::from_str(&allow).ok())
    else {
        metrics::counter!(
            "backchannel_requests_rejected_total",
            "source" => source_id.clone(),
            "reason" => "origin")
        .increment(1);
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "source {source_id:?}: takes no reports from pages at {:?}",
                origin.chars().take(100).collect::<String>()
            ),
        )
        .into_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let answer = response.headers_mut();
    answer.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    answer.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    answer.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    answer.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECS),
    );
    answer.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// Adds `Access-Control-Allow-Origin` to the answer of a POST from a page the source
/// takes reports from, so the browser counts the upload as delivered.
pub async fn allow_origin(
    State(state): State<Arc<AppState>>,
    Path(source_id): Path<String>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut response = next.run(request).await;
    let allow = origin.as_deref().and_then(|origin| {
        state
            .sources
            .get(&source_id)?
            .backchannel
            .cors_allow_origin(origin)
    });
    if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok())
        && !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}
