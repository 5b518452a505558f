//! The HTTP surface: ingest, health, readiness and metrics.
//!
//! Handlers translate between HTTP and the pipeline and hold no state of their own. Bad
//! input is answered with a 4xx and a reason, counted, and not logged above DEBUG;
//! internal failures are logged once here and never echoed to the client.

mod api;
mod cors;
mod ingest;
pub mod serve;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::timeout::TimeoutLayer;

use crate::clock::Clock;
use crate::sources::Source;
use crate::store::Store;
use crate::store::journal::Journal;

/// What handlers share.
pub struct AppState {
    pub sources: HashMap<String, Source>,
    /// Set by `serve` once the dedup index is loaded; ingest answers 503 until then.
    pub journal: OnceLock<Journal>,
    pub store: Store,
    pub clock: Clock,
    pub max_body_bytes: usize,
    /// Set by `serve` once rule windows and alerts are restored. Until then events are
    /// still accepted (they wait in the journal's queue for the evaluator), but
    /// `/readyz` says the server is starting.
    pub rules_ready: Arc<AtomicBool>,
    /// The REST API's bearer token check; `None` leaves it open.
    pub api_token: Option<crate::sources::auth::Auth>,
}

/// The router, with the body limit applied to every route.
pub fn router(state: Arc<AppState>, max_body_bytes: usize, timeout: std::time::Duration) -> Router {
    let timeout_text = humantime::format_duration(timeout).to_string();
    Router::new()
        .route(
            "/ingest/{source}",
            post(ingest::ingest).options(cors::preflight).layer(
                axum::middleware::from_fn_with_state(state.clone(), cors::allow_origin),
            ),
        )
        .route("/api/v1/events", get(api::events))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no route for {}", uri.path()),
            )
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} is not allowed here"),
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::map_response(move |response: Response| {
            let timeout_text = timeout_text.clone();
            async move { explain_timeout(response, &timeout_text) }
        }))
        .with_state(state)
}

/// The timeout layer answers 408 with no body; say why, as every other refusal does.
fn explain_timeout(response: Response, timeout_text: &str) -> Response {
    use axum::body::HttpBody;
    if response.status() != StatusCode::REQUEST_TIMEOUT
        || response.body().size_hint().exact() != Some(0)
    {
        return response;
    }
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!("the request took longer than server.request_timeout ({timeout_text})"),
    )
    .into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if let Err(error) = state.store.ping().await {
        tracing::error!(error = %error, "readiness check: store unreachable");
        return (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n").into_response();
    }
    if state.journal.get().is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: loading the dedup index\n",
        )
            .into_response();
    }
    if !state.rules_ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: rebuilding rule windows from the journal\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// The process-wide metrics recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may exist in tests that embed the server twice; then this
        // handle renders nothing, which only affects those tests' /metrics output.
        let _ = metrics::set_global_recorder(recorder);
        describe_metrics();
        handle
    })
}

/// The HELP text of every metric backchannel exports.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "backchannel_events_accepted_total",
        "Events made durable and new, by source"
    );
    describe_counter!(
        "backchannel_events_duplicate_total",
        "Events already seen within the dedup horizon, by source"
    );
    describe_counter!(
        "backchannel_events_skipped_total",
        "Malformed events skipped inside accepted batches, by source"
    );
    describe_counter!(
        "backchannel_requests_rejected_total",
        "Requests refused, by source and reason"
    );
    describe_counter!(
        "backchannel_notifications_sent_total",
        "Notifications delivered, by contact"
    );
    describe_counter!(
        "backchannel_notifications_retried_total",
        "Delivery attempts that will be retried, by contact"
    );
    describe_counter!(
        "backchannel_notifications_dead_total",
        "Notifications given up on (dead letters), by contact"
    );
    describe_gauge!("backchannel_alerts_firing", "Alerts firing now");
    describe_gauge!("backchannel_rule_groups", "Groups held in rule windows");
    describe_gauge!(
        "backchannel_rules_checked_timestamp_seconds",
        "When every rule group was last checked; falls behind if the evaluator is stuck"
    );
}

async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
        .into_response()
}

/// An error answer: status and a reason the client can act on.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        match self.retry_after_secs {
            Some(secs) => {
                (self.status, [(header::RETRY_AFTER, secs.to_string())], body).into_response()
            }
            None => (self.status, body).into_response(),
        }
    }
}
