//! `POST /ingest/{source}`: verify over the raw bytes, parse the same bytes, hand the
//! events to the journal, and answer 2xx only once the journal says they are durable.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, AppState};
use crate::sources::{Request, SourceError};

/// How long a client should wait when the journal is behind.
const RETRY_AFTER_SECS: u64 = 1;

pub async fn ingest(
    State(state): State<Arc<AppState>>,
    Path(source_id): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(source) = state.sources.get(&source_id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no source named {source_id:?}"),
        ));
    };
    let rejected = |reason: &'static str| {
        metrics::counter!(
            "backchannel_requests_rejected_total",
            "source" => source_id.clone(),
            "reason" => reason)
        .increment(1);
    };
    let body = body.map_err(|rejection| {
        // One reason per refusal, whichever limit it met.
        rejected(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "body"
        });
        let message = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "body is larger than the {} bytes allowed (server.max_body_bytes)",
                state.max_body_bytes
            )
        } else {
            rejection.body_text()
        };
        ApiError::new(
            rejection.status(),
            format!("source {source_id:?}: {message}"),
        )
    })?;

    // Signatures cover the bytes as the provider sent them, and no provider here
    // compresses its webhooks: a compressed body is refused rather than guessed at.
    if let Some(encoding) = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|e| !e.is_empty() && e != "identity")
    {
        rejected("encoding");
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "source {source_id:?}: content-encoding {encoding:?} is not supported; \
                 send the body uncompressed"
            ),
        ));
    }

    if let Some(limit) = source.backchannel.max_body_bytes()
        && body.len() > limit
    {
        rejected("too_large");
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "source {source_id:?}: body is larger than the {limit} bytes this source allows"
            ),
        ));
    }

    let now_ms = (state.clock)();
    let request = Request {
        headers: &headers,
        body: &body,
        now_ms,
        peer: peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
    };
    let verified = source.verify(request).await;
    let parsed = verified
        .and_then(|()| source.parse(&body, now_ms))
        .map(|mut parsed| {
            source
                .backchannel
                .request_keys(&source.id, &request, &mut parsed);
            parsed
        })
        .map_err(|error| {
            rejected(error.reason());
            tracing::debug!(source = %source_id, error = %error, "request rejected");
            let (status, retry_after_secs) = match &error {
                SourceError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, None),
                SourceError::Forbidden(_) => (StatusCode::FORBIDDEN, None),
                SourceError::BadRequest(_) => (StatusCode::BAD_REQUEST, None),
                SourceError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None),
                SourceError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, None),
                SourceError::RateLimited {
                    retry_after_secs, ..
                } => (StatusCode::TOO_MANY_REQUESTS, Some(*retry_after_secs)),
                SourceError::Upstream(_) => (StatusCode::BAD_GATEWAY, None),
            };
            ApiError {
                retry_after_secs,
                ..ApiError::new(status, error.to_string())
            }
        })?;

    let skipped = parsed.skipped.len();
    if skipped > 0 {
        metrics::counter!("backchannel_events_skipped_total", "source" => source_id.clone())
            .increment(skipped as u64);
        tracing::debug!(
            source = %source_id,
            skipped,
            first = %parsed.skipped[0],
            "malformed events skipped",
        );
        if parsed.events.is_empty() {
            rejected("no_valid_event");
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "source {source_id:?}: no event in the batch is valid; first problem: {}",
                    parsed.skipped[0]
                ),
            ));
        }
    }
    if parsed.events.is_empty() && skipped == 0 {
        rejected("no_event");
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("source {source_id:?}: the body holds no event (an empty batch?)"),
        ));
    }
    let total = parsed.events.len();

    let Some(journal) = state.journal.get() else {
        rejected("starting");
        return Err(ApiError {
            retry_after_secs: Some(RETRY_AFTER_SECS),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: the dedup index is loading; retry later",
            )
        });
    };
    let answer = journal
        .submit(source.id.clone(), now_ms, body, parsed.events)
        .map_err(|_| {
            rejected("overloaded");
            ApiError {
                retry_after_secs: Some(RETRY_AFTER_SECS),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "journal is behind; retry later",
                )
            }
        })?;
    let accepted = match answer.await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(_)) | Err(_) => {
            rejected("journal");
            return Err(ApiError {
                retry_after_secs: Some(RETRY_AFTER_SECS),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "journal is unavailable; retry later",
                )
            });
        }
    };
    metrics::counter!("backchannel_events_accepted_total", "source" => source_id.clone())
        .increment(accepted.new as u64);
    metrics::counter!("backchannel_events_duplicate_total", "source" => source_id)
        .increment(accepted.duplicates as u64);

    let reasons: Vec<&String> = parsed.skipped.iter().take(10).collect();
    Ok(Json(serde_json::json!({
        "received": total + skipped,
        "accepted": accepted.new,
        "duplicates": accepted.duplicates,
        "skipped": skipped,
        "skipped_reasons": reasons,
        "warnings": parsed.warnings,
    })))
}
