//! A forgiving JSON value for provider fields whose type varies between senders
//! (`"status": 550` or `"550"`, `category` as a string or a list, `pool` as an object or
//! a name). Reading a field as `Loose` never fails on its type, so one odd field does
//! not cost the whole event; the source decides what it can use. Also the structural
//! array splitter that keeps a batch's good elements when one is broken.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Any JSON value, with strings borrowed from the body where possible.
#[derive(Debug, Clone, PartialEq)]
pub enum Loose<'a> {
    Text(Cow<'a, str>),
    Number(serde_json::Number),
    Bool(bool),
    Null,
    List(Vec<Loose<'a>>),
    Object(Vec<(Cow<'a, str>, Loose<'a>)>),
}

impl<'a> Loose<'a> {
    /// The value as text, when it is a string or a number.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Loose::Text(text) => Some(Cow::Borrowed(text.as_ref())),
            Loose::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    }

    /// The value as a whole number, from a number or a numeric string.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Loose::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
            Loose::Text(text) => {
                let text = text.trim();
                text.parse::<i64>().ok().or_else(|| {
                    text.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(|f| f as i64)
                })
            }
            _ => None,
        }
    }

    /// Text of the value, or of each scalar in a list.
    pub fn texts(&self) -> Vec<String> {
        match self {
            Loose::List(items) => items
                .iter()
                .filter_map(|i| i.text().map(Cow::into_owned))
                .collect(),
            other => other.text().map(Cow::into_owned).into_iter().collect(),
        }
    }

    /// Member `name` of an object.
    pub fn field(&self, name: &str) -> Option<&Loose<'a>> {
        match self {
            Loose::Object(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor(std::marker::PhantomData))
    }
}

struct LooseVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Owned(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Owned(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v)
            .map(Loose::Number)
            .unwrap_or(Loose::Null))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Bool(v))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Loose::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Loose<'a>>()? {
            items.push(item);
        }
        Ok(Loose::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<Loose<'a>>()? {
            let value = map.next_value::<Loose<'a>>()?;
            if let Loose::Text(key) = key {
                members.push((key, value));
            }
        }
        Ok(Loose::Object(members))
    }
}

/// A JSON body as text, without the byte-order mark some senders put first.
pub fn body_text(body: &[u8]) -> Result<&str, super::SourceError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        super::SourceError::BadRequest(format!("body is not UTF-8 (byte {})", e.valid_up_to()))
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// The top-level elements of a JSON array found by structure alone (brackets, braces,
/// strings and their escapes), without validating their content. `None` when the
/// array itself is not well formed. Providers' arrays are read with this when one
/// element is broken (invalid UTF-8, a bad escape), so the others survive it.
pub fn split_array(body: &[u8]) -> Option<Vec<&[u8]>> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[start] != b'[' {
        return None;
    }
    let mut elements = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut element_start = start + 1;
    let mut end = None;
    for (index, &byte) in body.iter().enumerate().skip(start + 1) {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' if depth > 0 => depth -= 1,
            b']' => {
                end = Some(index);
                break;
            }
            b',' if depth == 0 => {
                elements.push(body[element_start..index].trim_ascii());
                element_start = index + 1;
            }
            b'}' => return None,
            _ => {}
        }
    }
    let end = end?;
    if !body[end + 1..].trim_ascii().is_empty() {
        return None;
    }
    let last = body[element_start..end].trim_ascii();
    if !last.is_empty() || !elements.is_empty() {
        elements.push(last);
    }
    Some(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_senders_send() {
        let parse = |text: &'static str| serde_json::from_str::<Loose>(text).unwrap();
        assert_eq!(parse("550").text().unwrap(), "550");
        assert_eq!(parse("\"550\"").integer(), Some(550));
        assert_eq!(parse("1700000000.5").integer(), Some(1_700_000_000));
        assert_eq!(parse("[\"a\", 1, {\"x\": 2}]").texts(), vec!["a", "1"]);
        assert_eq!(
            parse("{\"name\": \"pool-a\", \"id\": 3}")
                .field("name")
                .unwrap()
                .text()
                .unwrap(),
            "pool-a"
        );
        assert_eq!(parse("null").text(), None);
        assert!(matches!(
            parse("\"plain\""),
            Loose::Text(Cow::Borrowed("plain"))
        ));
    }
}
