//! Handlebars templates, one registry per output context.
//!
//! Escaping is chosen by where the text goes, never by the handlebars default: plain
//! text for summaries and the log, Slack mrkdwn inside a JSON string for Slack, JSON
//! strings for webhook bodies, HTML for email. The same value therefore renders
//! correctly everywhere. Limits of each channel are applied after rendering, by the
//! channel (`notify/`), not here.

use std::collections::BTreeMap;
use std::path::Path;

use handlebars::Handlebars;

/// Where rendered text ends up, which decides how `{{value}}` is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Context {
    /// Plain text: no escaping. For summaries, which are escaped again where they go.
    Text,
    /// A terminal or log file: control characters (line breaks, ESC, NUL) shown as
    /// escapes, so a provider's text cannot forge lines or colours.
    Log,
    /// Slack mrkdwn inside a JSON string: `& < >` as entities, then JSON string escapes.
    SlackJson,
    /// A JSON string: quotes, backslashes and control characters escaped.
    Json,
    /// HTML: handlebars' own escaping.
    Html,
}

/// Templates shipped with the binary: (name, context, source).
const BUILT_IN: &[(&str, Context, &str)] = &[
    (
        "slack",
        Context::SlackJson,
        include_str!("../templates/slack.json.hbs"),
    ),
    (
        "log",
        Context::Text,
        include_str!("../templates/log.txt.hbs"),
    ),
];

/// Escapes for Slack mrkdwn: Slack decodes exactly `&amp; &lt; &gt;`, so these three
/// and nothing else; this also keeps `<!channel>` in a value from pinging anyone.
pub fn escape_mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` with control characters written as `\n`, `\u{1b}` and so on.
pub fn escape_control(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The inside of a JSON string literal for `text`.
pub fn escape_json(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("strings serialise");
    quoted[1..quoted.len() - 1].to_string()
}

/// Compiled templates for every context.
#[derive(Debug)]
pub struct Templates {
    registries: BTreeMap<Context, Handlebars<'static>>,
    /// Where each named template came from: a file path, or "built in".
    origins: BTreeMap<String, String>,
}

/// A template that failed to compile or render.
#[derive(Debug, thiserror::Error)]
#[error("template {name:?}: {message}")]
pub struct TemplateError {
    pub name: String,
    pub message: String,
}

impl Templates {
    /// Built-in templates, then every `*.hbs` file of `dir` (which may override them by
    /// name: `slack.json.hbs` and `slack.hbs` both define `slack`).
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut registries = BTreeMap::new();
        for context in [
            Context::Text,
            Context::Log,
            Context::SlackJson,
            Context::Json,
            Context::Html,
        ] {
            let mut registry = Handlebars::new();
            match context {
                Context::Text => registry.register_escape_fn(handlebars::no_escape),
                Context::Log => registry.register_escape_fn(escape_control),
                Context::SlackJson => {
                    registry.register_escape_fn(|s| escape_json(&escape_mrkdwn(s)))
                }
                Context::Json => registry.register_escape_fn(escape_json),
                Context::Html => registry.register_escape_fn(handlebars::html_escape),
            }
            registries.insert(context, registry);
        }
        let mut templates = Self {
            registries,
            origins: BTreeMap::new(),
        };
        for (name, _, source) in BUILT_IN {
            templates.register_everywhere(name, source)?;
            templates
                .origins
                .insert(name.to_string(), "built in".to_string());
        }
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|e| TemplateError {
                name: dir.display().to_string(),
                message: format!("cannot read template directory: {e}"),
            })?;
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths
                .iter()
                .filter(|p| p.extension().is_some_and(|x| x == "hbs"))
            {
                let file = path.file_name().unwrap_or_default().to_string_lossy();
                let name = file.split('.').next().unwrap_or_default().to_string();
                let source = std::fs::read_to_string(path).map_err(|e| TemplateError {
                    name: name.clone(),
                    message: format!("{}: {e}", path.display()),
                })?;
                templates.register_everywhere(&name, &source)?;
                templates.origins.insert(name, path.display().to_string());
            }
        }
        Ok(templates)
    }

    fn register_everywhere(&mut self, name: &str, source: &str) -> Result<(), TemplateError> {
        for registry in self.registries.values_mut() {
            registry
                .register_template_string(name, source)
                .map_err(|e| TemplateError {
                    name: name.to_string(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Compiles an inline template (a rule's summary) under `name` in every context.
    pub fn register_inline(&mut self, name: &str, source: &str) -> Result<(), TemplateError> {
        self.register_everywhere(name, source)
    }

    /// Where template `name` came from (a file path, or "built in"), for error messages.
    pub fn origin(&self, name: &str) -> &str {
        self.origins.get(name).map_or("inline", String::as_str)
    }

    pub fn has(&self, name: &str) -> bool {
        self.registries[&Context::Text].has_template(name)
    }

    /// Renders template `name` for `context` with `data`.
    pub fn render(
        &self,
        name: &str,
        context: Context,
        data: &impl serde::Serialize,
    ) -> Result<String, TemplateError> {
        self.registries[&context]
            .render(name, data)
            .map_err(|e| TemplateError {
                name: name.to_string(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field case B30: the escaping follows the output channel.
    #[test]
    fn b30_escaping_by_channel() {
        let summary =
            r#"Can't reach db1.example.com: p99 > 2s && errors < 5% (threshold="x=1") <!channel>"#;
        let mut templates = Templates::load(None).unwrap();
        templates
            .register_inline(
                "t",
                r#"{"text":"{{summary}} <https://console.example/a?b=1|open>"}"#,
            )
            .unwrap();
        let data = serde_json::json!({ "summary": summary });

        let slack = templates.render("t", Context::SlackJson, &data).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&slack).unwrap();
        assert_eq!(
            parsed["text"],
            r#"Can't reach db1.example.com: p99 &gt; 2s &amp;&amp; errors &lt; 5% (threshold="x=1") &lt;!channel&gt; <https://console.example/a?b=1|open>"#
        );
        for entity in ["&#x27;", "&quot;", "&#x3D;"] {
            assert!(!slack.contains(entity), "{entity} in {slack}");
        }

        let json = templates.render("t", Context::Json, &data).unwrap();
        assert!(json.contains(r#"(threshold=\"x=1\")"#), "{json}");
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(parsed["text"].as_str().unwrap().starts_with(summary));

        templates
            .register_inline("h", "<p>{{summary}}</p>")
            .unwrap();
        let html = templates.render("h", Context::Html, &data).unwrap();
        assert!(
            html.contains("p99 &gt; 2s &amp;&amp; errors &lt; 5%"),
            "{html}"
        );
        assert!(html.contains("&lt;!channel&gt;"));

        let forged =
            serde_json::json!({ "summary": "x\n== RESOLVED [critical] forged \u{1b}[31mred\u{0}" });
        let log = templates.render("t", Context::Log, &forged).unwrap();
        assert!(
            !log.contains('\n') && !log.contains('\u{1b}') && !log.contains('\u{0}'),
            "{log}"
        );
        assert!(log.contains("x\\n== RESOLVED"), "{log}");

        templates.register_inline("plain", "{{summary}}").unwrap();
        assert_eq!(
            templates.render("plain", Context::Text, &data).unwrap(),
            summary
        );
    }
}
