//! From a body as received to the XML documents inside it.
//!
//! Reporters label their files inconsistently (gzip sent as `application/octet-stream`,
//! gzip named `.zip`, gzip inside gzip), so the format is chosen by the bytes alone:
//! `1f 8b` is gzip, `PK 03 04` is zip, `<` or a byte order mark is XML, and a header
//! line is an email message whose attachments are unpacked the same way. Names and MIME
//! types are never consulted.
//!
//! Everything decompressed counts against one budget per body: at most
//! [`Limits::max_bytes`] and at most [`Limits::max_ratio`] times the body's size, with
//! nesting at most [`Limits::max_depth`] deep and at most [`Limits::max_entries`] zip
//! entries, so a bomb costs a bounded amount of work and is answered 413. Reading the XML
//! is `xml.rs`'s job.

use std::borrow::Cow;
use std::io::Read;

use mail_parser::{MessageParser, MimeHeaders};

use crate::sources::SourceError;

/// Bounds on what one body may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes decompressed from one body, all layers and entries together.
    pub max_bytes: usize,
    /// Total decompressed bytes per byte of body, once past `ratio_floor_bytes`.
    pub max_ratio: usize,
    pub ratio_floor_bytes: usize,
    /// Layers of compression unwrapped (gzip in zip in gzip is three).
    pub max_depth: usize,
    /// Entries of one zip archive.
    pub max_entries: usize,
}

/// The limits every body is unpacked with.
pub const LIMITS: Limits = Limits {
    max_bytes: 50 * 1024 * 1024,
    // Report XML compresses 10 to 40 times; 200 leaves room and still stops a bomb that
    // nests deflate streams, each of which can reach about 1000.
    max_ratio: 200,
    ratio_floor_bytes: 1024 * 1024,
    max_depth: 3,
    max_entries: 16,
};

/// One document found in a body, or why a part of the body gave none.
#[derive(Debug)]
pub struct Item<'a> {
    /// Where it was found, for messages: `body`, `zip entry report.xml`, `attachment
    /// report.xml.gz`.
    pub origin: String,
    pub document: Result<Cow<'a, [u8]>, SourceError>,
}

/// What the first bytes say a piece of content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gzip,
    Zip,
    Xml,
    Email,
    Unknown,
}

pub fn sniff(bytes: &[u8]) -> Format {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Format::Gzip;
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Format::Zip;
    }
    if [&b"\xEF\xBB\xBF"[..], b"\xFF\xFE", b"\xFE\xFF"]
        .iter()
        .any(|bom| bytes.starts_with(bom))
    {
        return Format::Xml;
    }
    let text = bytes.trim_ascii_start();
    if text.first() == Some(&b'<') {
        return Format::Xml;
    }
    if looks_like_email(text) {
        return Format::Email;
    }
    Format::Unknown
}

/// A first line that is an mbox `From ` line or a header field (`Name: value`).
fn looks_like_email(text: &[u8]) -> bool {
    if text.starts_with(b"From ") {
        return true;
    }
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => line[..colon]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-'),
        _ => false,
    }
}

/// Decompressed bytes still allowed for the body being unpacked.
struct Budget {
    remaining: usize,
    cap: usize,
    by_ratio: bool,
    ratio: usize,
}

impl Budget {
    fn new(body_len: usize, limits: &Limits) -> Self {
        let by_ratio_cap = body_len
            .saturating_mul(limits.max_ratio)
            .max(limits.ratio_floor_bytes);
        let cap = limits.max_bytes.min(by_ratio_cap);
        Self {
            remaining: cap,
            cap,
            by_ratio: by_ratio_cap < limits.max_bytes,
            ratio: limits.max_ratio,
        }
    }

    fn exceeded(&self) -> SourceError {
        let why = if self.by_ratio {
            format!(
                "{} bytes, more than {} times the size of what was sent",
                self.cap, self.ratio
            )
        } else {
            format!("{} MiB", self.cap / (1024 * 1024))
        };
        SourceError::TooLarge(format!("decompressed content exceeds {why}; refused"))
    }

    /// Reads `reader` to its end within the budget.
    fn read(&mut self, reader: impl Read, what: &str) -> Result<Vec<u8>, SourceError> {
        let mut out = Vec::new();
        reader
            .take(self.remaining as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| SourceError::BadRequest(format!("{what} is corrupt: {e}")))?;
        if out.len() > self.remaining {
            self.remaining = 0;
            return Err(self.exceeded());
        }
        self.remaining -= out.len();
        Ok(out)
    }
}

/// Every document in `body`, in order.
pub fn unpack<'a>(body: &'a [u8], limits: &Limits) -> Vec<Item<'a>> {
    let mut budget = Budget::new(body.len(), limits);
    let mut items = Vec::new();
    if body.trim_ascii().is_empty() {
        items.push(Item {
            origin: "body".into(),
            document: Err(SourceError::BadRequest("empty body".into())),
        });
        return items;
    }
    if sniff(body) == Format::Email {
        match message_parts(body) {
            Ok(parts) => {
                for part in parts {
                    let origin = format!("attachment {}", part.name);
                    match part.content {
                        Ok(bytes) => unwrap(
                            Cow::Owned(bytes),
                            0,
                            origin,
                            &mut budget,
                            limits,
                            &mut items,
                        ),
                        Err(e) => items.push(Item {
                            origin,
                            document: Err(e),
                        }),
                    }
                }
            }
            Err(e) => items.push(Item {
                origin: "body".into(),
                document: Err(e),
            }),
        }
        return items;
    }
    unwrap(
        Cow::Borrowed(body),
        0,
        "body".into(),
        &mut budget,
        limits,
        &mut items,
    );
    items
}

fn unwrap<'a>(
    bytes: Cow<'a, [u8]>,
    depth: usize,
    origin: String,
    budget: &mut Budget,
    limits: &Limits,
    items: &mut Vec<Item<'a>>,
) {
    let format = sniff(&bytes);
    if matches!(format, Format::Gzip | Format::Zip) && depth >= limits.max_depth {
        items.push(Item {
            origin,
            document: Err(SourceError::TooLarge(format!(
                "compressed more than {} levels deep; refused",
                limits.max_depth
            ))),
        });
        return;
    }
    match format {
        Format::Xml => items.push(Item {
            origin,
            document: Ok(bytes),
        }),
        Format::Gzip => {
            let inner = budget.read(flate2::read::MultiGzDecoder::new(&bytes[..]), "gzip data");
            match inner {
                Ok(inner) => unwrap(Cow::Owned(inner), depth + 1, origin, budget, limits, items),
                Err(e) => items.push(Item {
                    origin,
                    document: Err(e),
                }),
            }
        }
        Format::Zip => match zip_entries(&bytes, budget, limits) {
            Ok(entries) => {
                for (name, entry) in entries {
                    let origin = format!("{origin}, zip entry {name}");
                    match entry {
                        Ok(inner) => {
                            unwrap(Cow::Owned(inner), depth + 1, origin, budget, limits, items)
                        }
                        Err(e) => items.push(Item {
                            origin,
                            document: Err(e),
                        }),
                    }
                }
            }
            Err(e) => items.push(Item {
                origin,
                document: Err(e),
            }),
        },
        Format::Email | Format::Unknown => {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            let message = if depth > 0 {
                format!(
                    "decompressed content is not XML (it starts {})",
                    head.join(" ")
                )
            } else {
                format!(
                    "content is not gzip, zip or XML (it starts {})",
                    head.join(" ")
                )
            };
            items.push(Item {
                origin,
                document: Err(SourceError::UnsupportedMediaType(message)),
            });
        }
    }
}

/// Entry count a zip archive's end record declares, read before the archive is opened
/// so that a central directory of a million entries is refused without being parsed.
fn declared_entries(bytes: &[u8]) -> Option<usize> {
    let tail_start = bytes.len().saturating_sub(22 + 65_535);
    let tail = &bytes[tail_start..];
    let at = tail.windows(4).rposition(|w| w == b"PK\x05\x06")?;
    let record = tail.get(at..at + 22)?;
    let entries = u16::from_le_bytes([record[10], record[11]]);
    Some(if entries == u16::MAX {
        usize::MAX
    } else {
        usize::from(entries)
    })
}

type Entries = Vec<(String, Result<Vec<u8>, SourceError>)>;

fn zip_entries(bytes: &[u8], budget: &mut Budget, limits: &Limits) -> Result<Entries, SourceError> {
    let too_many = |n: usize| {
        SourceError::TooLarge(format!(
            "zip archive has {} entries; reports have one, and at most {} are read",
            if n == usize::MAX {
                "65535 or more".to_string()
            } else {
                n.to_string()
            },
            limits.max_entries
        ))
    };
    if let Some(n) = declared_entries(bytes)
        && n > limits.max_entries
    {
        return Err(too_many(n));
    }
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| SourceError::BadRequest(format!("zip archive is corrupt: {e}")))?;
    if archive.len() > limits.max_entries {
        return Err(too_many(archive.len()));
    }
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let entry = match archive.by_index(index) {
            Ok(entry) => entry,
            Err(e) => {
                let refused = SourceError::BadRequest(format!("zip entry cannot be read: {e}"));
                entries.push((format!("#{index}"), Err(refused)));
                continue;
            }
        };
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("#{index}"));
        if entry.is_dir() {
            continue;
        }
        if entry.size() > budget.remaining as u64 {
            entries.push((name, Err(budget.exceeded())));
            continue;
        }
        let content = budget.read(entry, "zip entry");
        entries.push((name, content));
    }
    Ok(entries)
}

/// One attachment of an email message that may hold a report.
#[derive(Debug)]
pub struct Part {
    pub name: String,
    pub content: Result<Vec<u8>, SourceError>,
}

/// The parts of an email message that hold (or claim to hold) an aggregate report:
/// every leaf part whose bytes are gzip, zip or XML, and every attachment, which is
/// refused if it is none of those. A failure (ruf) report, or a message without any
/// such part, is refused as a whole.
pub fn message_parts(bytes: &[u8]) -> Result<Vec<Part>, SourceError> {
    let message = MessageParser::default()
        .parse(bytes)
        .ok_or_else(|| SourceError::BadRequest("the email message cannot be parsed".into()))?;
    let has_type = |ctype: &str, subtype: &str| {
        message.parts.iter().any(|part| {
            part.content_type().is_some_and(|t| {
                t.ctype().eq_ignore_ascii_case(ctype)
                    && t.subtype().is_some_and(|s| s.eq_ignore_ascii_case(subtype))
            })
        })
    };
    let failure_report = SourceError::UnsupportedMediaType(
        "this is a DMARC failure (ruf) report, not an aggregate (rua) report: only \
         aggregate reports are read"
            .into(),
    );
    if has_type("message", "feedback-report") {
        return Err(failure_report);
    }
    let mut parts = Vec::new();
    for (index, part) in message.parts.iter().enumerate() {
        // FIXME: a report forwarded as an attached message (message/rfc822) is not
        // looked into; descending one level into such parts would read it.
        if part.is_multipart() || part.is_message() {
            continue;
        }
        let content = part.contents();
        let name = part
            .attachment_name()
            .map(str::to_string)
            .unwrap_or_else(|| format!("part {index}"));
        let is_attachment = part.attachment_name().is_some()
            || part
                .content_disposition()
                .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"))
            || part
                .content_type()
                .is_some_and(|t| t.ctype().eq_ignore_ascii_case("application"));
        match sniff(content) {
            Format::Gzip | Format::Zip | Format::Xml => parts.push(Part {
                name,
                content: Ok(content.to_vec()),
            }),
            _ if is_attachment => {
                let head: Vec<String> =
                    content.iter().take(8).map(|b| format!("{b:02x}")).collect();
                parts.push(Part {
                    name,
                    content: Err(SourceError::UnsupportedMediaType(format!(
                        "attachment is not gzip, zip or XML (it starts {})",
                        head.join(" ")
                    ))),
                });
            }
            // The message's own text ("this is an aggregate report from ...").
            _ => {}
        }
    }
    // A report container with nothing attached is a failure report in free text, as
    // some MTAs send them.
    if parts.is_empty() && has_type("multipart", "report") {
        return Err(failure_report);
    }
    if parts.is_empty() {
        return Err(SourceError::UnsupportedMediaType(
            "the email message has no aggregate report attached (gzip, zip or XML)".into(),
        ));
    }
    Ok(parts)
}
