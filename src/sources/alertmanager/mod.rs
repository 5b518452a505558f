//! Prometheus Alertmanager's webhook receiver: optional bearer token or basic auth
//! (what Alertmanager's `http_config` can send), then one event per alert.
//!
//! FIXME: an `alertmanager.resolved` event does not resolve the backchannel alert its
//! firing raised; that alert resolves when its rule's window passes without a firing.
//! Rules have no way to name an event that ends an alert; one would lift this.

pub mod parse;

use std::sync::Arc;

use serde::Deserialize;

pub use parse::{FIRING, RESOLVED, parse_notification};

use super::auth::{Auth, RawAuth};
use super::webhook::check_json_media;
use super::{Backchannel, ParsedBatch, Pending, Request, SourceError};
use crate::config::SourceSettings;
use crate::event::Event;

/// Alert labels that become event labels unless `labels` says otherwise: names whose
/// values are few per installation. Sorted, since event labels are.
pub const DEFAULT_LABELS: &[&str] = &[
    "alertname",
    "cluster",
    "env",
    "job",
    "namespace",
    "service",
    "severity",
    "team",
];

/// A configured Alertmanager webhook receiver.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    pub auth: Option<Auth>,
    /// Sorted alert label names that become event labels.
    pub labels: Vec<String>,
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Alert label names that become event labels (default `DEFAULT_LABELS`).
    labels: Option<Vec<String>>,
    /// `Authorization: Bearer <token>` (Alertmanager: `http_config.authorization`).
    token: Option<String>,
    /// HTTP basic auth (Alertmanager: `http_config.basic_auth`).
    username: Option<String>,
    password: Option<String>,
    /// Largest body accepted, in bytes (default: `server.max_body_bytes`).
    max_body_bytes: Option<usize>,
}

pub fn configure(settings: &mut SourceSettings<'_>) -> Option<Arc<dyn Backchannel>> {
    let raw: Settings = settings.parse()?;
    let auth = Auth::configure(
        settings,
        RawAuth {
            token: raw.token,
            username: raw.username,
            password: raw.password,
            ..RawAuth::default()
        },
    );
    if auth.is_none() {
        settings.warn("no token or username, so anyone who can reach it can post alerts");
    }
    let mut labels: Vec<String> = match raw.labels {
        Some(labels) => labels,
        None => DEFAULT_LABELS.iter().map(|s| s.to_string()).collect(),
    };
    for name in &labels {
        let prometheus_name = !name.is_empty()
            && name.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            });
        if !prometheus_name {
            settings.error(
                "labels",
                format!("expected Prometheus label names, found {name:?}"),
            );
        } else if name == "source" {
            settings.error(
                "labels",
                "\"source\" is the source id and cannot be an alert label",
            );
        }
    }
    labels.sort();
    labels.dedup();
    Some(Arc::new(Alertmanager {
        auth,
        labels,
        max_body_bytes: raw.max_body_bytes,
    }))
}

impl Backchannel for Alertmanager {
    fn verify<'a>(
        &'a self,
        source: &'a str,
        request: Request<'a>,
    ) -> Pending<'a, Result<(), SourceError>> {
        let result = match &self.auth {
            Some(auth) => auth.check(source, &request),
            None => Ok(()),
        }
        .and_then(|()| check_json_media(source, &request));
        Box::pin(std::future::ready(result))
    }

    fn parse(
        &self,
        source: &Arc<str>,
        body: &[u8],
        received_ms: i64,
    ) -> Result<ParsedBatch, SourceError> {
        parse_notification(source, &self.labels, body, received_ms)
    }

    fn is_verified(&self) -> bool {
        self.auth.is_some()
    }

    /// The links back to what raised the alert: the Prometheus expression and the
    /// Alertmanager it came through.
    fn passthrough(&self, event: &Event) -> serde_json::Map<String, serde_json::Value> {
        #[derive(Deserialize)]
        struct Links {
            #[serde(rename = "generatorURL")]
            generator_url: Option<String>,
            #[serde(rename = "externalURL")]
            external_url: Option<String>,
        }
        let mut out = serde_json::Map::new();
        if let Ok(links) = serde_json::from_str::<Links>(&event.raw) {
            for (name, value) in [
                ("generatorURL", links.generator_url),
                ("externalURL", links.external_url),
            ] {
                if let Some(value) = value.filter(|v| !v.is_empty()) {
                    out.insert(name.into(), value.into());
                }
            }
        }
        out
    }

    fn max_body_bytes(&self) -> Option<usize> {
        self.max_body_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_labels_are_sorted() {
        assert!(DEFAULT_LABELS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn settings_are_checked() {
        let check = |table: &str| {
            SourceSettings::check_alone("sources.am", toml::from_str(table).unwrap(), configure)
        };
        assert!(check("").is_ok());
        assert!(check("token = \"t\"").unwrap().is_verified());
        assert_eq!(
            check("labels = [\"source\", \"a-b\"]").unwrap_err().len(),
            2
        );
        assert!(
            check("username = \"u\"").is_err(),
            "a user without a password"
        );
        assert!(check("lables = []").is_err());
    }
}
