//! Slack's message limits, applied to a rendered payload so that rendering never costs
//! a delivery: long section text is split across sections, headers and fields are cut
//! with `…`, and blocks past the limit become one "+N more" line.

use serde_json::{Value, json};

use super::truncate_chars;

pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION_TEXT: usize = 3000;
pub const MAX_HEADER_TEXT: usize = 150;
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD_TEXT: usize = 2000;
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Slack truncates `text` past 40,000 characters; a fallback this long is useless
/// anyway, so it is cut well before.
pub const MAX_FALLBACK_TEXT: usize = 3000;

/// Brings a `{text, blocks}` payload within Slack's limits. Returns how many values
/// were cut (splits lose nothing and are not counted).
pub fn apply_slack_limits(payload: &mut Value) -> usize {
    let mut cut = 0;
    if let Some(text) = payload.get_mut("text") {
        cut += cut_string(text, MAX_FALLBACK_TEXT);
    }
    let Some(blocks) = payload.get_mut("blocks").and_then(Value::as_array_mut) else {
        return cut;
    };
    let mut out: Vec<Value> = Vec::with_capacity(blocks.len());
    for mut block in blocks.drain(..) {
        match block.get("type").and_then(Value::as_str) {
            Some("header") => {
                if let Some(text) = block.pointer_mut("/text/text") {
                    cut += cut_string(text, MAX_HEADER_TEXT);
                }
                out.push(block);
            }
            Some("section") => {
                if let Some(fields) = block.get_mut("fields").and_then(Value::as_array_mut) {
                    if fields.len() > MAX_FIELDS {
                        cut += fields.len() - MAX_FIELDS;
                        fields.truncate(MAX_FIELDS);
                    }
                    for field in fields.iter_mut() {
                        if let Some(text) = field.get_mut("text") {
                            cut += cut_string(text, MAX_FIELD_TEXT);
                        }
                    }
                }
                let long_text = block
                    .pointer("/text/text")
                    .and_then(Value::as_str)
                    .filter(|t| t.chars().count() > MAX_SECTION_TEXT)
                    .map(str::to_string);
                match long_text {
                    Some(text) => {
                        let kind = block
                            .pointer("/text/type")
                            .cloned()
                            .unwrap_or(json!("mrkdwn"));
                        let pieces = split_text(&text, MAX_SECTION_TEXT);
                        for (index, piece) in pieces.into_iter().enumerate() {
                            let mut section = if index == 0 {
                                block.clone()
                            } else {
                                json!({"type": "section"})
                            };
                            section["text"] = json!({"type": kind, "text": piece});
                            if index > 0 {
                                section.as_object_mut().map(|o| o.remove("fields"));
                            }
                            out.push(section);
                        }
                    }
                    None => out.push(block),
                }
            }
            Some("context") => {
                if let Some(elements) = block.get_mut("elements").and_then(Value::as_array_mut) {
                    if elements.len() > MAX_CONTEXT_ELEMENTS {
                        cut += elements.len() - MAX_CONTEXT_ELEMENTS;
                        elements.truncate(MAX_CONTEXT_ELEMENTS);
                    }
                    for element in elements.iter_mut() {
                        if let Some(text) = element.get_mut("text") {
                            cut += cut_string(text, MAX_FIELD_TEXT);
                        }
                    }
                }
                out.push(block);
            }
            _ => out.push(block),
        }
    }
    if out.len() > MAX_BLOCKS {
        let hidden = out.len() - (MAX_BLOCKS - 1);
        out.truncate(MAX_BLOCKS - 1);
        let more = json!({"type": "mrkdwn", "text": format!("+{hidden} more")});
        out.push(json!({"type": "context", "elements": [more]}));
        cut += hidden;
    }
    *blocks = out;
    cut
}

fn cut_string(value: &mut Value, max: usize) -> usize {
    match value.as_str().and_then(|s| truncate_chars(s, max)) {
        Some(short) => {
            *value = Value::String(short);
            1
        }
        None => 0,
    }
}

/// Splits `text` into pieces of at most `max` characters, at a line break or space when
/// one is near, never inside an `&…;` entity.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max {
        let hard = rest
            .char_indices()
            .nth(max)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let window = &rest[..hard];
        let soft = window
            .rfind('\n')
            .or_else(|| window.rfind(' '))
            .filter(|i| *i > hard / 2);
        let mut at = soft.map(|i| i + 1).unwrap_or(hard);
        if let Some(amp) = rest[..at].rfind('&')
            && !rest[amp..at].contains(';')
            && at - amp <= 6
            && amp > 0
        {
            at = amp;
        }
        pieces.push(rest[..at].to_string());
        rest = &rest[at..];
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest.to_string());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field case B17, at the payload level: every section ≤ 3000, header ≤ 150, and
    /// nothing of the long text is lost.
    #[test]
    fn b17_long_section_is_split_and_header_cut() {
        let description = "x".repeat(3500);
        let mut payload = json!({
            "text": "S".repeat(200),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "S".repeat(200)}},
                {"type": "section", "text": {"type": "mrkdwn", "text": description}},
            ]
        });
        let cut = apply_slack_limits(&mut payload);
        assert_eq!(cut, 1, "the header was cut; the section was split, not cut");
        let blocks = payload["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        let header = blocks[0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), 150);
        assert!(header.ends_with('…'));
        let joined: String = blocks[1..]
            .iter()
            .map(|b| b["text"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(joined, description);
        for block in &blocks[1..] {
            assert!(block["text"]["text"].as_str().unwrap().chars().count() <= MAX_SECTION_TEXT);
        }
    }

    #[test]
    fn splits_prefer_spaces_and_respect_entities() {
        let text = format!("{} &amp;{}", "a".repeat(2990), "b".repeat(100));
        let pieces = split_text(&text, 3000);
        assert_eq!(pieces[0], format!("{} ", "a".repeat(2990)));
        let entity = format!("{}&amp;", "c".repeat(2997));
        let pieces = split_text(&entity, 3000);
        assert_eq!(pieces[0], "c".repeat(2997));
        assert_eq!(pieces[1], "&amp;");
    }

    #[test]
    fn too_many_blocks_become_more_line() {
        let blocks: Vec<Value> = (0..60)
            .map(|i| json!({"type": "divider", "block_id": i.to_string()}))
            .collect();
        let mut payload = json!({"text": "t", "blocks": blocks});
        apply_slack_limits(&mut payload);
        let blocks = payload["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), MAX_BLOCKS);
        assert_eq!(blocks[49]["elements"][0]["text"], "+11 more");
    }
}
