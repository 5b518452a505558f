//! A forgiving reader of RFC 7489 aggregate report XML (and of the DMARCbis drafts,
//! which keep the same element names and add some).
//!
//! Real reporters send documents that are not well-formed: an `xs:schema` start tag
//! that is never closed, raw Windows-1252 bytes in a document declared UTF-8, a bare `<`
//! in an email field. Rejecting such a report would lose all its records over a cosmetic
//! fault, so the reader keeps its own element stack, closes what was left open, treats
//! impossible tags as text, and notes each repair for the sender. Elements are matched by
//! local name against their nearest known ancestor, so namespaces, prefixes, unknown
//! wrappers and unknown tags change nothing.
//!
//! Entities: only the five predefined ones and character references are resolved. A
//! document that declares its own entities is refused before anything is expanded; an
//! undeclared reference stays as text. Turning the report into events is `events.rs`'s.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Longest text kept of one field; reports never need more, and it bounds what one
/// field can make an event's raw JSON weigh.
const MAX_FIELD_CHARS: usize = 1024;

/// Elements nested deeper than this are not a report.
const MAX_DEPTH: usize = 256;

/// One aggregate report as read, values trimmed and otherwise as sent.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub version: Option<String>,
    pub org_name: Option<String>,
    pub email: Option<String>,
    pub extra_contact_info: Option<String>,
    pub report_id: Option<String>,
    pub begin: Option<String>,
    pub end: Option<String>,
    pub errors: Vec<String>,
    pub generator: Option<String>,
    pub policy: Vec<(&'static str, String)>,
    pub records: Vec<Record>,
    /// What was wrong with the document and how it was read anyway.
    pub repairs: Vec<String>,
}

impl Report {
    /// A `policy_published` value (`p`, `domain`, `np`, ...).
    pub fn policy(&self, name: &str) -> Option<&str> {
        self.policy
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One `<record>`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Record {
    pub source_ip: Option<String>,
    pub count: Option<String>,
    pub disposition: Option<String>,
    pub dkim: Option<String>,
    pub spf: Option<String>,
    pub reasons: Vec<Reason>,
    pub header_from: Option<String>,
    pub envelope_from: Option<String>,
    pub envelope_to: Option<String>,
    pub dkim_results: Vec<AuthResult>,
    pub spf_results: Vec<AuthResult>,
}

/// A `policy_evaluated/reason`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reason {
    pub kind: Option<String>,
    pub comment: Option<String>,
}

/// One `auth_results/dkim` or `auth_results/spf`; each keeps the fields it had.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AuthResult {
    pub fields: Vec<(&'static str, String)>,
}

/// Why a document is not read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error(
        "the XML declares its own entities (<!DOCTYPE ... <!ENTITY>), which aggregate \
         reports never do; refused without expanding them"
    )]
    Entities,
    #[error("XML is not a DMARC aggregate report: {0}")]
    NotAggregate(String),
    #[error("elements are nested more than {MAX_DEPTH} deep")]
    TooDeep,
}

/// What an element is, found from its name and its nearest known ancestor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Feedback,
    Version,
    Metadata,
    OrgName,
    Email,
    ExtraContact,
    ReportId,
    DateRange,
    Begin,
    End,
    MetaError,
    Generator,
    Policy,
    PolicyField(&'static str),
    Record,
    Row,
    SourceIp,
    Count,
    Evaluated,
    Disposition,
    EvalDkim,
    EvalSpf,
    Reason,
    ReasonType,
    ReasonComment,
    Identifiers,
    HeaderFrom,
    EnvelopeFrom,
    EnvelopeTo,
    AuthResults,
    AuthDkim,
    AuthSpf,
    AuthField(&'static str),
    /// An element this reader does not know: transparent, so known elements inside an
    /// unexpected wrapper are still found.
    Unknown,
    /// Extensions, and anything inside a leaf: nothing in here is read.
    Opaque,
}

const POLICY_FIELDS: &[&str] = &[
    "domain",
    "adkim",
    "aspf",
    "p",
    "sp",
    "np",
    "pct",
    "fo",
    "testing",
    "discovery_method",
];
const AUTH_FIELDS: &[&str] = &["domain", "selector", "result", "human_result", "scope"];

fn known(list: &[&'static str], name: &str) -> Option<&'static str> {
    list.iter().copied().find(|k| *k == name)
}

/// The kind of element `name` inside an element whose context is `context`.
fn classify(context: Kind, name: &str) -> Kind {
    use Kind::*;
    match (context, name) {
        (Feedback, "version") => Version,
        (Feedback, "report_metadata") => Metadata,
        (Feedback, "policy_published") => Policy,
        (Feedback, "record") => Record,
        (Feedback | Record, "extensions") => Opaque,
        (Metadata, "org_name") => OrgName,
        (Metadata, "email") => Email,
        (Metadata, "extra_contact_info") => ExtraContact,
        (Metadata, "report_id") => ReportId,
        (Metadata, "date_range") => DateRange,
        (Metadata, "error") => MetaError,
        (Metadata, "generator") => Generator,
        (DateRange, "begin") => Begin,
        (DateRange, "end") => End,
        (Policy, _) => known(POLICY_FIELDS, name).map_or(Unknown, PolicyField),
        (Record, "row") => Row,
        (Record, "identifiers") => Identifiers,
        (Record, "auth_results") => AuthResults,
        (Row, "source_ip") => SourceIp,
        (Row, "count") => Count,
        (Row, "policy_evaluated") => Evaluated,
        (Evaluated, "disposition") => Disposition,
        (Evaluated, "dkim") => EvalDkim,
        (Evaluated, "spf") => EvalSpf,
        (Evaluated, "reason") => Reason,
        (Reason, "type") => ReasonType,
        (Reason, "comment") => ReasonComment,
        (Identifiers, "header_from") => HeaderFrom,
        (Identifiers, "envelope_from") => EnvelopeFrom,
        (Identifiers, "envelope_to") => EnvelopeTo,
        (AuthResults, "dkim") => AuthDkim,
        (AuthResults, "spf") => AuthSpf,
        (AuthDkim | AuthSpf, _) => known(AUTH_FIELDS, name).map_or(Unknown, AuthField),
        (
            Feedback | Metadata | DateRange | Record | Row | Evaluated | Reason | Identifiers
            | AuthResults,
            _,
        ) => Unknown,
        // Leaves hold text; an element inside one is malformed content, not structure.
        _ => Opaque,
    }
}

impl Kind {
    /// Whether the element's text is a value this reader keeps.
    fn is_leaf(self) -> bool {
        use Kind::*;
        matches!(
            self,
            Version
                | OrgName
                | Email
                | ExtraContact
                | ReportId
                | Begin
                | End
                | MetaError
                | Generator
                | PolicyField(_)
                | SourceIp
                | Count
                | Disposition
                | EvalDkim
                | EvalSpf
                | ReasonType
                | ReasonComment
                | HeaderFrom
                | EnvelopeFrom
                | EnvelopeTo
                | AuthField(_)
        )
    }
}

struct Open {
    name: String,
    kind: Kind,
    /// The kind children are classified against: the element's own, or for an unknown
    /// element its parent's.
    context: Kind,
    text: String,
}

/// Reads a decompressed document. Repairs are listed in `Report::repairs`.
pub fn read_report(bytes: &[u8]) -> Result<Report, XmlError> {
    let mut report = Report::default();
    let text = decode(bytes, &mut report.repairs);
    let mut reader = Reader::from_str(&text);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.allow_dangling_amp = true;
    config.check_comments = false;

    let mut state = State {
        report,
        stack: Vec::new(),
        record: None,
        root_seen: false,
        root_closed: false,
    };
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(error) => {
                // Only the end of the input makes quick-xml fail once its name checks are
                // off (a tag or comment left open): what was read so far is kept.
                state.repair(format!("document cut short: {error}"));
                break;
            }
        };
        match event {
            Event::Start(start) => state.open_tag(&start, false)?,
            Event::Empty(start) => state.open_tag(&start, true)?,
            Event::End(end) => {
                let name = end.name().as_ref().to_string();
                state.close_tag(&name);
            }
            Event::Text(text) => state.text(&text),
            Event::CData(data) => state.text(&data),
            Event::GeneralRef(reference) => {
                let name = reference.to_string();
                let resolved = if reference.is_char_ref() {
                    reference.resolve_char_ref().ok().flatten()
                } else {
                    predefined(&name)
                };
                match resolved {
                    Some(c) => state.text(c.encode_utf8(&mut [0; 4])),
                    None => {
                        state.repair(format!("undefined entity &{name}; kept as text"));
                        state.text(&format!("&{name};"));
                    }
                }
            }
            Event::DocType(doctype) => {
                let declaration = doctype.to_ascii_uppercase();
                if declaration.contains("<!ENTITY") {
                    return Err(XmlError::Entities);
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
        if state.root_closed {
            break;
        }
    }
    if !state.root_seen {
        return Err(XmlError::NotAggregate("no <feedback> element".into()));
    }
    if !state.root_closed {
        // Cut before its own id, a report is not one: counting it would invent a report
        // (of domain "unknown") that no reporter sent, and its redelivery in full could
        // not be told apart from it.
        if state.report.report_id.is_none() {
            return Err(XmlError::NotAggregate(
                "the document ends before its report_id (truncated?)".into(),
            ));
        }
        state.repair("document ends before </feedback>: records left open are dropped".into());
    }
    Ok(state.report)
}

struct State {
    report: Report,
    stack: Vec<Open>,
    record: Option<Record>,
    root_seen: bool,
    root_closed: bool,
}

impl State {
    fn repair(&mut self, note: String) {
        // One note per kind of repair is enough for the sender; a thousand identical
        // ones would only bury the others.
        if !self.report.repairs.contains(&note) && self.report.repairs.len() < 20 {
            self.report.repairs.push(note);
        }
    }

    fn text(&mut self, text: &str) {
        if let Some(top) = self.stack.last_mut()
            && top.kind.is_leaf()
            && top.text.len() < MAX_FIELD_CHARS * 4
        {
            top.text.push_str(text);
        }
    }

    fn open_tag(&mut self, start: &BytesStart<'_>, empty: bool) -> Result<(), XmlError> {
        let raw = start.to_string();
        let name = start.name().as_ref().to_string();
        if !is_xml_name(&name) {
            self.stray_angle_bracket(&raw, empty);
            return Ok(());
        }
        let local = local_name(&name).to_ascii_lowercase();
        let kind = match self.stack.last() {
            Some(parent) => classify(parent.context, &local),
            None if self.root_seen => return Ok(()),
            None if local == "feedback" => Kind::Feedback,
            None => {
                return Err(XmlError::NotAggregate(format!(
                    "the root element is <{name}>, not <feedback>"
                )));
            }
        };
        if self.stack.len() >= MAX_DEPTH {
            return Err(XmlError::TooDeep);
        }
        let context = match kind {
            Kind::Unknown => self.stack.last().map_or(Kind::Unknown, |p| p.context),
            other => other,
        };
        self.root_seen = true;
        match kind {
            Kind::Record => {
                if self.record.is_some() {
                    self.repair("a <record> started inside another; the first is dropped".into());
                }
                self.record = Some(Record::default());
            }
            Kind::AuthDkim => {
                if let Some(record) = &mut self.record {
                    record.dkim_results.push(AuthResult::default());
                }
            }
            Kind::AuthSpf => {
                if let Some(record) = &mut self.record {
                    record.spf_results.push(AuthResult::default());
                }
            }
            Kind::Reason => {
                if let Some(record) = &mut self.record {
                    record.reasons.push(Reason::default());
                }
            }
            _ => {}
        }
        self.stack.push(Open {
            name,
            kind,
            context,
            text: String::new(),
        });
        if empty {
            let open = self.stack.pop().expect("just pushed");
            self.finish(open);
        }
        Ok(())
    }

    /// A `<` that does not start a tag (`<dmarc@example.net>`, `a < b`): its text goes to
    /// the open field. quick-xml reads such a tag up to the next `>`, which may be the
    /// `>` of the field's own end tag; that end tag is then honoured.
    fn stray_angle_bracket(&mut self, raw: &str, empty: bool) {
        let field = self
            .stack
            .last()
            .map_or_else(|| "document".to_string(), |o| format!("<{}>", o.name));
        self.repair(format!("unescaped < in {field} text kept as text"));
        let (text, end) = match raw.rfind("</") {
            Some(i) => (&raw[..i], Some(raw[i + 2..].trim())),
            None => (raw, None),
        };
        let suffix = if empty && end.is_none() { "/>" } else { ">" };
        match end {
            Some(end) => {
                self.text(&format!("<{text}"));
                self.close_tag(end);
            }
            None => self.text(&format!("<{text}{suffix}")),
        }
    }

    fn close_tag(&mut self, name: &str) {
        let Some(index) = self.stack.iter().rposition(|o| o.name == name) else {
            self.repair(format!("stray end tag </{name}> ignored"));
            return;
        };
        while self.stack.len() > index + 1 {
            let open = self.stack.pop().expect("above index");
            self.repair(format!(
                "non-conformant XML repaired: stray {} never closed",
                open.name
            ));
            self.finish(open);
        }
        let open = self.stack.pop().expect("at index");
        self.finish(open);
    }

    /// An element ended: its value goes where its kind says.
    fn finish(&mut self, open: Open) {
        if open.kind == Kind::Feedback {
            self.root_closed = true;
            return;
        }
        if open.kind == Kind::Record {
            if let Some(record) = self.record.take() {
                self.report.records.push(record);
            }
            return;
        }
        if !open.kind.is_leaf() {
            return;
        }
        let value = clip(open.text.trim());
        let auth = self
            .stack
            .iter()
            .rev()
            .map(|o| o.kind)
            .find(|k| matches!(k, Kind::AuthDkim | Kind::AuthSpf));
        let report = &mut self.report;
        let record = self.record.as_mut();
        match open.kind {
            Kind::Version => report.version = Some(value),
            Kind::OrgName => report.org_name = Some(value),
            Kind::Email => report.email = Some(value),
            Kind::ExtraContact => report.extra_contact_info = Some(value),
            Kind::ReportId => report.report_id = Some(value),
            Kind::Begin => report.begin = Some(value),
            Kind::End => report.end = Some(value),
            Kind::MetaError => report.errors.push(value),
            Kind::Generator => report.generator = Some(value),
            Kind::PolicyField(name) => {
                report.policy.retain(|(k, _)| *k != name);
                report.policy.push((name, value));
            }
            _ => {
                if let Some(record) = record {
                    record_field(record, open.kind, auth, value);
                }
            }
        }
    }
}

/// Sets a record's field; `auth` is the `auth_results` child the field is inside.
fn record_field(record: &mut Record, kind: Kind, auth: Option<Kind>, value: String) {
    match kind {
        Kind::SourceIp => record.source_ip = Some(value),
        Kind::Count => record.count = Some(value),
        Kind::Disposition => record.disposition = Some(value),
        Kind::EvalDkim => record.dkim = Some(value),
        Kind::EvalSpf => record.spf = Some(value),
        Kind::ReasonType => {
            if let Some(reason) = record.reasons.last_mut() {
                reason.kind = Some(value);
            }
        }
        Kind::ReasonComment => {
            if let Some(reason) = record.reasons.last_mut() {
                reason.comment = Some(value);
            }
        }
        Kind::HeaderFrom => record.header_from = Some(value),
        Kind::EnvelopeFrom => record.envelope_from = Some(value),
        Kind::EnvelopeTo => record.envelope_to = Some(value),
        Kind::AuthField(name) => {
            let list = match auth {
                Some(Kind::AuthDkim) => &mut record.dkim_results,
                Some(Kind::AuthSpf) => &mut record.spf_results,
                _ => return,
            };
            if let Some(result) = list.last_mut() {
                result.fields.retain(|(k, _)| *k != name);
                result.fields.push((name, value));
            }
        }
        _ => {}
    }
}

/// The five entities every XML document has.
fn predefined(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_FIELD_CHARS) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

fn local_name(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, local)| local)
}

/// Whether `name` can be an XML element name (loosely: what reports would use).
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// The document as text. UTF-16 (by its byte order mark) is converted; bytes that are
/// not UTF-8 become U+FFFD, or are read as Latin-1 when the declaration says so.
fn decode(bytes: &[u8], repairs: &mut Vec<String>) -> String {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return decode_utf8(rest, repairs);
    }
    let utf16 = |rest: &[u8], little: bool| {
        let units = rest.chunks_exact(2).map(|pair| {
            let pair = [pair[0], pair[1]];
            if little {
                u16::from_le_bytes(pair)
            } else {
                u16::from_be_bytes(pair)
            }
        });
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect::<String>()
    };
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, true);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, false);
    }
    decode_utf8(bytes, repairs)
}

fn decode_utf8(bytes: &[u8], repairs: &mut Vec<String>) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(error) => {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_ascii_lowercase();
            let latin1 = ["iso-8859-1", "latin1", "latin-1", "windows-1252"]
                .iter()
                .any(|e| {
                    head.contains(&format!("encoding=\"{e}\""))
                        || head.contains(&format!("encoding='{e}'"))
                });
            if latin1 {
                repairs.push("read as ISO-8859-1, as its declaration says".into());
                bytes.iter().map(|&b| char::from(b)).collect()
            } else {
                repairs.push(format!(
                    "invalid UTF-8 (first at byte {}) replaced with U+FFFD",
                    error.valid_up_to()
                ));
                String::from_utf8_lossy(bytes).into_owned()
            }
        }
    }
}
