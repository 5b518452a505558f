//! Reading JSON the way browsers write it: field names in any of three spellings,
//! numbers that are sometimes strings, and arrays split by structure when one element
//! is broken. Nothing here knows what a report is.

use serde_json::{Map, Value};

/// Member of `object` whose name, lowercased without `-` and `_`, is one of `names`.
pub fn field<'v>(object: &'v Map<String, Value>, names: &[&str]) -> Option<&'v Value> {
    object.iter().find_map(|(key, value)| {
        let mut canonical = String::with_capacity(key.len());
        canonical.extend(
            key.chars()
                .filter(|c| *c != '-' && *c != '_')
                .map(|c| c.to_ascii_lowercase()),
        );
        names.contains(&canonical.as_str()).then_some(value)
    })
}

/// A string as it is, or a number as text.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A whole number from a number or a numeric string (`"status-code": "200"`).
pub fn integer(value: &Value) -> Option<i64> {
    let float = |f: f64| (f.is_finite() && f.abs() < 9.0e15).then_some(f as i64);
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(float)),
        Value::String(text) => {
            let text = text.trim();
            text.parse::<i64>()
                .ok()
                .or_else(|| text.parse::<f64>().ok().and_then(float))
        }
        _ => None,
    }
}
