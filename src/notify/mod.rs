//! Notify: the only module that talks to the outside. Contacts render a notification for
//! their channel, apply the channel's limits after rendering, and deliver it; the outbox
//! worker (`outbox.rs`) retries, honours rate limits and declares dead letters.

pub mod limits;
pub mod log;
pub mod outbox;
pub mod slack;

use std::sync::Arc;
use std::time::Duration;

use crate::alerts::Notification;
use crate::store::Store;
use crate::templates::Templates;

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Sent,
    /// Worth trying again: after `after` when the channel said so (a rate limit pauses
    /// every delivery to this contact), else after the backoff.
    Retry {
        after: Option<Duration>,
        error: String,
    },
    /// Trying again would fail the same way (`invalid_blocks`, a revoked token).
    Failed(String),
}

/// The kind-specific part of a contact.
pub enum ContactKind {
    Log(log::LogContact),
    Slack(Box<slack::SlackContact>),
}

/// A configured contact.
pub struct Contact {
    pub name: String,
    pub kind: ContactKind,
    /// How long a notification may take, retries included, before it is a dead letter.
    pub deadline_ms: i64,
}

impl Contact {
    /// Renders and delivers one notification.
    pub async fn deliver(
        &self,
        store: &Store,
        templates: &Arc<Templates>,
        notification: &Notification,
    ) -> Delivery {
        match &self.kind {
            ContactKind::Log(contact) => contact.deliver(templates, notification),
            ContactKind::Slack(contact) => {
                contact
                    .deliver(&self.name, store, templates, notification)
                    .await
            }
        }
    }
}

/// Shortens `text` to at most `max` characters, ending in `…` when cut.
pub fn truncate_chars(text: &str, max: usize) -> Option<String> {
    if text.chars().count() <= max {
        return None;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    // Never leave half an entity such as `&amp;` behind.
    if let Some(amp) = cut.rfind('&')
        && !cut[amp..].contains(';')
        && cut.len() - amp <= 6
    {
        cut.truncate(amp);
    }
    cut.push('…');
    Some(cut)
}
