//! The `log` contact: each notification as one readable block on standard output.
//!
//! It needs no account anywhere, which makes it the contact a new install sees first.

use std::io::Write;
use std::sync::Arc;

use super::Delivery;
use crate::alerts::Notification;
use crate::templates::{Context, Templates};

pub struct LogContact {
    pub template: String,
}

impl LogContact {
    pub fn deliver(&self, templates: &Arc<Templates>, notification: &Notification) -> Delivery {
        let text = match templates.render(&self.template, Context::Log, notification) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(error = %error, "log template failed; printing the summary only");
                format!(
                    "[{}] {}\n",
                    notification.status.as_str(),
                    notification.summary
                )
            }
        };
        let mut out = std::io::stdout().lock();
        match out
            .write_all(text.as_bytes())
            .and_then(|_| out.write_all(b"\n"))
            .and_then(|_| out.flush())
        {
            Ok(()) => Delivery::Sent,
            Err(error) => Delivery::Retry {
                after: None,
                error: format!("standard output: {error}"),
            },
        }
    }
}
