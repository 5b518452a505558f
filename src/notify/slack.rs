//! The Slack contact: Block Kit messages through the Web API (`chat.postMessage`, and
//! `chat.update` or a thread reply on resolution), or through an incoming webhook.
//!
//! Retries belong to the outbox, not to the Slack client: the client is built without
//! rate control, and a 429 comes back here as `Retry { after }` so the outbox pauses the
//! whole contact for `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use slack_morphism::errors::{SlackClientError, SlackClientProtocolError};
use slack_morphism::prelude::*;

use super::limits::apply_slack_limits;
use super::{Delivery, truncate_chars};
use crate::alerts::{Notification, Status};
use crate::store::Store;
use crate::templates::{Context, Templates, escape_mrkdwn};

type Client = SlackClient<SlackClientHyperConnector<HttpsConnector<HttpConnector>>>;

/// How a resolution is shown when the firing message is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveMode {
    /// Replace the firing message with the resolved rendering.
    Update,
    /// Reply in the firing message's thread.
    Thread,
}

/// Where messages go.
pub enum Target {
    Api {
        token: SlackApiToken,
        channel: String,
        resolve: ResolveMode,
    },
    Webhook {
        url: url::Url,
    },
}

pub struct SlackContact {
    client: Client,
    target: Target,
    template: String,
    max_description_chars: usize,
}

/// Retry-After to assume when Slack rate-limits without saying for how long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

impl SlackContact {
    /// `api_url` replaces `https://slack.com/api` (GovSlack, a proxy, a test fake); plain
    /// `http` is allowed for loopback fakes.
    pub fn new(
        api_url: &str,
        target: Target,
        template: String,
        max_description_chars: usize,
    ) -> Self {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let connector = SlackClientHyperConnector::with_connector(https)
            .with_slack_api_url(api_url.trim_end_matches('/'));
        Self {
            client: SlackClient::new(connector),
            target,
            template,
            max_description_chars,
        }
    }

    pub async fn deliver(
        &self,
        contact: &str,
        store: &Store,
        templates: &Arc<Templates>,
        notification: &Notification,
    ) -> Delivery {
        let content = self.render(contact, templates, notification);
        let earlier = match (
            &self.target,
            store.message_ref(&notification.fingerprint, contact).await,
        ) {
            (Target::Webhook { .. }, _) => None,
            (_, Ok(found)) => found,
            (_, Err(error)) => {
                return Delivery::Retry {
                    after: None,
                    error: error.to_string(),
                };
            }
        };
        let mut result = self
            .send(contact, store, notification, content, earlier.clone())
            .await;
        if let Err(error) = &result
            && is_content_error(error)
        {
            // Rendering never costs a delivery: what Slack refused as blocks goes
            // again as plain text.
            tracing::warn!(
                contact,
                error = %error,
                "slack refused the rendered message; sending plain text",
            );
            let plain = plain_text(notification);
            result = self
                .send(contact, store, notification, plain, earlier)
                .await;
        }
        match result {
            Ok(()) => Delivery::Sent,
            Err(error) => classify(error),
        }
    }

    async fn send(
        &self,
        contact: &str,
        store: &Store,
        notification: &Notification,
        content: SlackMessageContent,
        earlier: Option<(String, String)>,
    ) -> Result<(), SlackClientError> {
        let (token, channel, resolve) = match &self.target {
            Target::Webhook { url } => {
                let request = SlackApiPostWebhookMessageRequest::new(content);
                return match self.client.post_webhook_message(url, &request).await {
                    // Only an HTTP 200 gets as far as parsing: the webhook took it.
                    Err(SlackClientError::ProtocolError(e)) => {
                        warn_odd_answer(contact, &e);
                        Ok(())
                    }
                    other => other.map(|_| ()),
                };
            }
            Target::Api {
                token,
                channel,
                resolve,
            } => (token, channel, resolve),
        };
        let session = self.client.open_session(token);
        let status = notification.status;
        if let (Status::Resolved, Some((channel_id, ts)), ResolveMode::Update) =
            (status, &earlier, resolve)
        {
            // chat.update keeps the old blocks when none are given: a plain-text
            // resolution must clear them, or the firing layout stays on screen.
            let mut replacement = content.clone();
            if replacement.blocks.is_none() {
                replacement.blocks = Some(Vec::new());
            }
            let request = SlackApiChatUpdateRequest::new(
                channel_id.clone().into(),
                replacement,
                ts.clone().into(),
            );
            match session.chat_update(&request).await {
                Err(SlackClientError::ProtocolError(e)) if answered_ok(&e).is_some() => {
                    warn_odd_answer(contact, &e);
                    return Ok(());
                }
                Err(SlackClientError::ApiError(e))
                    if e.code == "message_not_found" || e.code == "cant_update_message" =>
                {
                    tracing::warn!(
                        contact,
                        error = %e.code,
                        "firing message cannot be updated; posting the resolution",
                    );
                }
                other => return other.map(|_| ()),
            }
        }
        let mut request = SlackApiChatPostMessageRequest::new(channel.clone().into(), content);
        match (status, &earlier) {
            // A reminder goes in the thread of the message that first announced the
            // alert, and to the channel too, so that message stays the one to resolve.
            (Status::Firing, Some((_, ts))) if notification.repeat => {
                request = request
                    .with_thread_ts(ts.clone().into())
                    .with_reply_broadcast(true);
            }
            (Status::Resolved, Some((_, ts))) if *resolve == ResolveMode::Thread => {
                request = request.with_thread_ts(ts.clone().into());
            }
            _ => {}
        }
        let (posted_channel, posted_ts) = match session.chat_post_message(&request).await {
            Ok(response) => (response.channel.0, response.ts.0),
            // Slack, or a proxy in front of it, said ok in a shape the client does not
            // parse: posting again would duplicate the message, so take it as sent.
            Err(SlackClientError::ProtocolError(e)) => {
                let Some(body) = answered_ok(&e) else {
                    return Err(SlackClientError::ProtocolError(e));
                };
                warn_odd_answer(contact, &e);
                let field = |name: &str| body[name].as_str().unwrap_or_default().to_string();
                (field("channel"), field("ts"))
            }
            Err(error) => return Err(error),
        };
        // Only the first message of a firing episode is remembered: a repeat must not
        // move the reference that the resolution updates or replies to.
        if status == Status::Firing
            && (!notification.repeat || earlier.is_none())
            && !posted_ts.is_empty()
        {
            let saved = store
                .save_message_ref(
                    &notification.fingerprint,
                    contact,
                    &posted_channel,
                    &posted_ts,
                )
                .await;
            if let Err(error) = saved {
                tracing::warn!(
                    error = %error,
                    contact,
                    "message posted but its reference was not saved; resolution will post anew",
                );
            }
        }
        Ok(())
    }

    /// Renders the template, applies Slack's limits, and falls back to plain text if the
    /// template does not produce a valid message, so that rendering never costs a delivery.
    pub fn render(
        &self,
        contact: &str,
        templates: &Templates,
        notification: &Notification,
    ) -> SlackMessageContent {
        self.try_render(contact, templates, notification)
            .unwrap_or_else(|error| {
                tracing::error!(
                    error = %error,
                    contact,
                    template = %self.template,
                    "slack template failed; sending plain text",
                );
                plain_text(notification)
            })
    }

    /// Renders without the fallback; `check` uses it to prove a template works.
    pub fn try_render(
        &self,
        contact: &str,
        templates: &Templates,
        notification: &Notification,
    ) -> Result<SlackMessageContent, String> {
        render_message(
            &self.template,
            self.max_description_chars,
            contact,
            templates,
            notification,
        )
    }
}

/// Renders `template` for `notification` as a Slack message, with Slack's limits applied,
/// or says why it is not one. `check` calls it for every Slack contact, enabled or not.
pub fn render_message(
    template: &str,
    max_description_chars: usize,
    contact: &str,
    templates: &Templates,
    notification: &Notification,
) -> Result<SlackMessageContent, String> {
    let mut notification = notification.clone();
    if let Some(short) = truncate_chars(&notification.description, max_description_chars) {
        tracing::warn!(
            contact,
            field = "description",
            limit = max_description_chars,
            "truncated field description"
        );
        notification.description = short;
    }
    let text = templates
        .render(template, Context::SlackJson, &notification)
        .map_err(|e| e.to_string())?;
    let mut payload: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let cut = apply_slack_limits(&mut payload);
    if cut > 0 {
        tracing::debug!(contact, cut, "values cut to Slack's limits");
    }
    check_text_types(&payload)?;
    let content = serde_json::from_value::<SlackMessageContent>(payload)
        .map_err(|e| format!("not a Slack message: {e}"))?;
    check_blocks(&content)?;
    Ok(content)
}

/// Text objects the Slack model reads without their `type`: a header takes plain text
/// only, and Slack refuses the message otherwise.
fn check_text_types(payload: &serde_json::Value) -> Result<(), String> {
    let blocks = payload["blocks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (index, block) in blocks.iter().enumerate() {
        let text_type = block["text"]["type"].as_str().unwrap_or("plain_text");
        if block["type"] == "header" && text_type != "plain_text" {
            return Err(format!(
                "blocks[{index}]: a header's text must be plain_text, found {text_type:?}"
            ));
        }
    }
    Ok(())
}

/// Refuses blocks whose `type` Slack does not know or whose fields do not fit that type
/// (the Slack model keeps them as `Unknown` instead of failing), and a message with no
/// `text`: Slack shows it in notifications and wherever blocks cannot be drawn.
fn check_blocks(content: &SlackMessageContent) -> Result<(), String> {
    for (index, block) in content.blocks.iter().flatten().enumerate() {
        if let SlackBlock::Unknown(value) = block {
            let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
            return Err(format!(
                "blocks[{index}] (type {kind:?}) is not a Slack block, or its fields do not \
                 fit its type"
            ));
        }
    }
    if content.text.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Err("expected a top-level \"text\" (the notification and fallback text)".into());
    }
    Ok(())
}

/// The JSON body of an HTTP 200 answer that says `"ok": true` but did not parse as the
/// documented response.
fn answered_ok(error: &SlackClientProtocolError) -> Option<serde_json::Value> {
    let body: serde_json::Value = serde_json::from_str(error.json_body.as_deref()?).ok()?;
    (body["ok"] == true).then_some(body)
}

fn warn_odd_answer(contact: &str, error: &SlackClientProtocolError) {
    tracing::warn!(
        contact,
        error = %error.json_error,
        "slack accepted the message but answered in an unexpected shape; counted as sent",
    );
}

/// The notification as one line of text, for when blocks cannot be used.
fn plain_text(notification: &Notification) -> SlackMessageContent {
    let text = format!(
        "[{}] [{}] {}: {}",
        notification.status.as_str(),
        notification.severity.as_str(),
        notification.rule,
        escape_mrkdwn(&notification.summary)
    );
    SlackMessageContent::new().with_text(truncate_chars(&text, 3000).unwrap_or(text))
}

/// Whether Slack refused the message's content rather than the request.
fn is_content_error(error: &SlackClientError) -> bool {
    const CODES: [&str; 4] = [
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_attachments",
        "msg_too_long",
    ];
    match error {
        SlackClientError::ApiError(e) => CODES.contains(&e.code.as_str()),
        SlackClientError::HttpError(e) if e.status_code.is_client_error() => e
            .http_response_body
            .as_deref()
            .is_some_and(|body| CODES.iter().any(|code| body.contains(code))),
        _ => false,
    }
}

/// Which Slack failures are worth retrying. Errors that would fail the same way again
/// (`invalid_blocks`, `channel_not_found`, `invalid_auth`, other 4xx) are not.
fn classify(error: SlackClientError) -> Delivery {
    match error {
        SlackClientError::RateLimitError(e) => Delivery::Retry {
            after: Some(e.retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
            error: format!("rate limited: {}", e.code.unwrap_or_else(|| "429".into())),
        },
        SlackClientError::ApiError(e) => match e.code.as_str() {
            "ratelimited" | "rate_limited" => Delivery::Retry {
                after: Some(DEFAULT_RETRY_AFTER),
                error: e.code,
            },
            "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
                Delivery::Retry {
                    after: None,
                    error: e.code,
                }
            }
            _ => Delivery::Failed(format!("slack answered {}", e.code)),
        },
        SlackClientError::HttpError(e) if e.status_code.is_server_error() => Delivery::Retry {
            after: None,
            error: format!("HTTP {}", e.status_code),
        },
        SlackClientError::HttpError(e) => Delivery::Failed(format!(
            "HTTP {}: {}",
            e.status_code,
            e.http_response_body
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>()
        )),
        other => Delivery::Retry {
            after: None,
            error: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects formatted log lines so a test can assert on warnings.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Field case B17: the over-long description is cut with one warning naming the
    /// field, and the message still renders within Slack's limits.
    #[test]
    fn b17_truncation_warns_once_naming_the_field() {
        crate::install_crypto_provider();
        let contact = SlackContact::new(
            "http://127.0.0.1:9/api",
            Target::Webhook {
                url: "http://127.0.0.1:9/hooks/x".parse().unwrap(),
            },
            "slack".into(),
            3000,
        );
        let templates = Templates::load(None).unwrap();
        let mut notification = Notification::sample();
        notification.summary = "S".repeat(200);
        notification.description = "x".repeat(3500);

        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let content = tracing::subscriber::with_default(subscriber, || {
            contact
                .try_render("ops", &templates, &notification)
                .unwrap()
        });
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
        assert!(logs.contains("truncated field description"), "{logs}");
        assert!(content.text.unwrap().chars().count() <= 40_000);
        assert_eq!(
            content.blocks.unwrap().len(),
            5,
            "header, description, fields, trace, context"
        );
    }
}
