//! The wall clock, injectable so tests and replays decide what "now" is.

use std::sync::Arc;

/// Returns milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// A clock stuck at `ms`, for tests that check timestamps against a known instant.
pub fn fixed(ms: i64) -> Clock {
    Arc::new(move || ms)
}
