//! Bulk revocation files for `denylistctl revoke --from-file`: CSV or JSON lines, one
//! revocation per line, validated whole before anything is published.
//!
//! CSV has a header naming its columns, in any order: `kind`, `issuer`, `target` (required)
//! and `reason`, `cutoff`, `expires_at` (optional). JSON lines are objects with the same
//! fields. Blank lines and lines starting with `#` are skipped.
//!
//! ```text
//! kind,issuer,target,reason,cutoff
//! subject,https://auth.example.com,user-8f14,account takeover,now
//! jti,https://auth.example.com,3f2a6c1e-9b7d,leaked in a log,
//! issuer,https://legacy.example.com,,key compromise,2026-05-01T02:00:00Z
//! ```
//!
//! Every line becomes one event whose id is [`ids::bulk_event_id`] of the file's digest, the
//! line number and the line's resolved times: running the same file again republishes the
//! same ids, which JetStream (within its duplicate window) and every sidecar (always) treat
//! as already applied — unless a relative time (`now`, `+30d`) now resolves to another
//! second, and then the line is a new revocation with the new times. Every
//! problem is reported with its line and field; one bad line rejects the whole file.

use std::collections::HashMap;
use std::path::Path;

use denylist_proto::events::{Action, Event, EventError, Revoke, RuleKind};

use crate::ids;
use crate::timespec;

/// Most line errors kept for reporting; the count goes on past it.
pub const MAX_REPORTED_ERRORS: usize = 1000;

/// The file's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl FileFormat {
    /// Chooses by extension (`.csv`; `.jsonl`, `.ndjson`, `.json`), else by the first line
    /// that is not blank or a comment: `{` means JSON lines.
    pub fn detect(path: &Path, content: &[u8]) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
        {
            Some(e) if e == "csv" => return Self::Csv,
            Some(e) if matches!(e.as_str(), "jsonl" | "ndjson" | "json") => {
                return Self::JsonLines;
            }
            _ => {}
        }
        let text = String::from_utf8_lossy(content);
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'));
        match first {
            Some(l) if l.trim_start_matches('\u{feff}').starts_with('{') => Self::JsonLines,
            _ => Self::Csv,
        }
    }
}

/// What a line does not say itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkDefaults {
    /// Who publishes (the events' `actor`).
    pub actor: String,
    /// Reason for lines without one.
    pub reason: String,
    /// Creation time of every event, Unix milliseconds; also what `now` means.
    pub now_ms: i64,
}

/// One problem in a bulk file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number (the header of a CSV file is line 1).
    pub line: u64,
    /// The field (column) at fault; empty when the line as a whole is.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(
                f,
                "line {}, field `{}`: {}",
                self.line, self.field, self.message
            )
        }
    }
}

/// A file rejected whole. `errors` holds the first [`MAX_REPORTED_ERRORS`] problems in line
/// order; `total` counts them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{total} problem(s), nothing was published; first: {}", .errors.first().map(ToString::to_string).unwrap_or_default())]
pub struct BulkError {
    /// The first problems, in line order.
    pub errors: Vec<LineError>,
    /// How many problems there are in all.
    pub total: usize,
}

/// A validated bulk file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkFile {
    /// One event per revocation line, in file order.
    pub events: Vec<Event>,
    /// [`ids::file_digest`] of the file.
    pub digest: String,
    /// The syntax it was read as.
    pub format: FileFormat,
}

/// A time column: Unix seconds (JSON number) or text for [`timespec::parse_time`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum TimeValue {
    Unix(i64),
    Text(String),
}

/// One line's fields before validation.
#[derive(Debug, Default)]
struct RawLine {
    line: u64,
    kind: Option<String>,
    issuer: Option<String>,
    target: Option<String>,
    reason: Option<String>,
    cutoff: Option<TimeValue>,
    expires_at: Option<TimeValue>,
}

const COLUMNS: [&str; 6] = ["kind", "issuer", "target", "reason", "cutoff", "expires_at"];
const REQUIRED: [&str; 3] = ["kind", "issuer", "target"];

/// Parses and validates a whole file. Nothing in it is used unless every line is good.
pub fn parse(
    content: &[u8],
    format: FileFormat,
    defaults: &BulkDefaults,
) -> Result<BulkFile, BulkError> {
    let digest = ids::file_digest(content);
    let mut errors = Errors::default();
    let raw = match format {
        FileFormat::Csv => read_csv(content, &mut errors),
        FileFormat::JsonLines => read_json_lines(content, &mut errors),
    };
    if raw.is_empty() && errors.total == 0 {
        errors.push(1, "", "the file holds no revocations");
    }
    let mut events = Vec::with_capacity(raw.len());
    for line in raw {
        if let Some(event) = to_event(line, &digest, defaults, &mut errors) {
            events.push(event);
        }
    }
    if errors.total > 0 {
        errors.list.sort_by_key(|e| e.line);
        return Err(BulkError {
            errors: errors.list,
            total: errors.total,
        });
    }
    Ok(BulkFile {
        events,
        digest,
        format,
    })
}

#[derive(Default)]
struct Errors {
    list: Vec<LineError>,
    total: usize,
}

impl Errors {
    fn push(&mut self, line: u64, field: &str, message: impl Into<String>) {
        self.total += 1;
        if self.list.len() < MAX_REPORTED_ERRORS {
            self.list.push(LineError {
                line,
                field: field.to_owned(),
                message: message.into(),
            });
        }
    }
}

fn strip_bom(content: &[u8]) -> &[u8] {
    content.strip_prefix(b"\xef\xbb\xbf").unwrap_or(content)
}

/// The non-blank, non-comment lines of a file with their 1-based numbers. Lines are split
/// here rather than by the CSV reader so every error and every event id names the physical
/// line; a record therefore cannot span lines (a quoted newline is an error).
fn content_lines(content: &[u8]) -> impl Iterator<Item = (u64, Result<&str, std::str::Utf8Error>)> {
    strip_bom(content)
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, bytes)| {
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            (i as u64 + 1, std::str::from_utf8(bytes))
        })
        .filter(|(_, text)| {
            text.as_ref().map_or(true, |t| {
                !t.trim().is_empty() && !t.trim_start().starts_with('#')
            })
        })
}

/// A line must hold exactly one record. Quotes come in pairs (`""` is an escaped quote); an
/// odd count is a quoted field that goes on past the end of the line. A carriage return left
/// inside a line (not the end of a CRLF) ends a record for the CSV reader, which would put two
/// records on one line and shift every line number after it.
fn check_line(text: &str) -> Result<(), String> {
    if text.matches('"').count() % 2 == 1 {
        Err("unterminated quoted field (a record must fit on one line)".to_owned())
    } else if text.contains('\r') {
        Err("carriage return inside the line (a record must fit on one line)".to_owned())
    } else {
        Ok(())
    }
}

fn csv_reader(text: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text)
}

fn read_csv(content: &[u8], errors: &mut Errors) -> Vec<RawLine> {
    // Lines are checked one by one, then the good ones are parsed by one reader (building a
    // reader per line costs more than parsing the line); record k is line `kept[k]`.
    let mut kept: Vec<(u64, &str)> = Vec::new();
    let mut header: Option<(u64, &str)> = None;
    for (line, text) in content_lines(content) {
        let checked = text
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|t| check_line(t).map(|()| t));
        match (checked, header) {
            (Ok(t), None) => header = Some((line, t)),
            (Err(e), None) => {
                errors.push(line, "", format!("unreadable header: {e}"));
                return Vec::new();
            }
            (Ok(t), Some(_)) => kept.push((line, t)),
            (Err(e), Some(_)) => errors.push(line, "", e),
        }
    }
    let Some((header_line, header)) = header else {
        return Vec::new();
    };
    let headers: Vec<String> = match csv_reader(header.as_bytes()).records().next() {
        Some(Ok(record)) => record.iter().map(str::to_owned).collect(),
        Some(Err(e)) => {
            errors.push(header_line, "", format!("unreadable header: {e}"));
            return Vec::new();
        }
        None => Vec::new(),
    };
    let mut index: HashMap<&'static str, usize> = HashMap::new();
    for (i, name) in headers.iter().enumerate() {
        match COLUMNS.iter().find(|c| **c == name) {
            Some(c) if index.contains_key(c) => {
                errors.push(header_line, name, "column named twice in the header");
            }
            Some(c) => {
                index.insert(c, i);
            }
            None => errors.push(
                header_line,
                name,
                format!(
                    "unknown column; the header names columns among {}",
                    COLUMNS.join(",")
                ),
            ),
        }
    }
    for required in REQUIRED {
        if !index.contains_key(required) {
            errors.push(
                header_line,
                required,
                "missing column: the header must name kind, issuer and target",
            );
        }
    }
    if errors.total > 0 {
        return Vec::new();
    }
    let body = kept.iter().map(|(_, t)| *t).collect::<Vec<_>>().join("\n");
    let mut out = Vec::with_capacity(kept.len());
    for (k, record) in csv_reader(body.as_bytes()).records().enumerate() {
        let line = kept.get(k).map_or(0, |(line, _)| *line);
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(line, "", format!("unreadable: {e}"));
                continue;
            }
        };
        if record.len() != headers.len() {
            errors.push(
                line,
                "",
                format!(
                    "has {} fields; the header has {}",
                    record.len(),
                    headers.len()
                ),
            );
            continue;
        }
        let get = |c: &str| {
            index
                .get(c)
                .and_then(|i| record.get(*i))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        out.push(RawLine {
            line,
            kind: get("kind"),
            issuer: get("issuer"),
            target: get("target"),
            reason: get("reason"),
            cutoff: get("cutoff").map(TimeValue::Text),
            expires_at: get("expires_at").map(TimeValue::Text),
        });
    }
    out
}

fn read_json_lines(content: &[u8], errors: &mut Errors) -> Vec<RawLine> {
    let mut lines = Vec::new();
    for (line, text) in content_lines(content) {
        let Ok(text) = text else {
            errors.push(line, "", "not UTF-8");
            continue;
        };
        let text = text.trim();
        let object = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => {
                errors.push(line, "", "not a JSON object");
                continue;
            }
            Err(e) => {
                errors.push(line, "", format!("not JSON: {e}"));
                continue;
            }
        };
        let mut raw = RawLine {
            line,
            ..RawLine::default()
        };
        for (key, value) in object {
            if value.is_null() {
                continue;
            }
            match key.as_str() {
                "kind" | "issuer" | "target" | "reason" => {
                    let Some(s) = value.as_str() else {
                        errors.push(line, &key, "must be a string");
                        continue;
                    };
                    let s = (!s.trim().is_empty()).then(|| s.trim().to_owned());
                    match key.as_str() {
                        "kind" => raw.kind = s,
                        "issuer" => raw.issuer = s,
                        "target" => raw.target = s,
                        _ => raw.reason = s,
                    }
                }
                "cutoff" | "expires_at" => {
                    let t = match &value {
                        serde_json::Value::Number(n) => match n.as_i64() {
                            Some(n) => TimeValue::Unix(n),
                            None => {
                                errors.push(line, &key, "must be whole Unix seconds");
                                continue;
                            }
                        },
                        serde_json::Value::String(s) => TimeValue::Text(s.clone()),
                        _ => {
                            errors.push(line, &key, "must be Unix seconds or a time string");
                            continue;
                        }
                    };
                    if key == "cutoff" {
                        raw.cutoff = Some(t);
                    } else {
                        raw.expires_at = Some(t);
                    }
                }
                _ => errors.push(
                    line,
                    &key,
                    format!("unknown field; fields are {}", COLUMNS.join(", ")),
                ),
            }
        }
        lines.push(raw);
    }
    lines
}

fn to_event(
    raw: RawLine,
    digest: &str,
    defaults: &BulkDefaults,
    errors: &mut Errors,
) -> Option<Event> {
    let line = raw.line;
    let before = errors.total;
    let now_secs = defaults.now_ms.div_euclid(1000);
    let kind = match raw.kind.as_deref() {
        None => {
            errors.push(
                line,
                "kind",
                "required (jti, subject, session, key or issuer)",
            );
            None
        }
        Some(k) => match k.to_ascii_lowercase().parse::<RuleKind>() {
            Ok(kind) => Some(kind),
            Err(_) => {
                errors.push(
                    line,
                    "kind",
                    format!("unknown rule kind {k:?}; use jti, subject, session, key or issuer"),
                );
                None
            }
        },
    };
    let issuer = raw.issuer.unwrap_or_default();
    if issuer.is_empty() {
        errors.push(line, "issuer", "required");
    }
    let targets = match (kind, raw.target) {
        (Some(RuleKind::Issuer), Some(_)) => {
            errors.push(
                line,
                "target",
                "an issuer revocation takes no target; leave it empty",
            );
            Vec::new()
        }
        (Some(RuleKind::Issuer), None) => Vec::new(),
        (Some(k), None) => {
            errors.push(
                line,
                "target",
                format!("required: the {} to revoke", target_noun(k)),
            );
            Vec::new()
        }
        (_, Some(t)) => vec![t],
        (None, None) => Vec::new(),
    };
    let cutoff = match (kind, raw.cutoff) {
        (Some(k), Some(_)) if !k.has_cutoff() => {
            errors.push(
                line,
                "cutoff",
                "applies only to subject and issuer revocations",
            );
            0
        }
        (Some(_), Some(t)) => time_field(line, "cutoff", &t, now_secs, errors).unwrap_or(0),
        (Some(k), None) if k.has_cutoff() => now_secs,
        _ => 0,
    };
    if cutoff > now_secs + 300 {
        errors.push(
            line,
            "cutoff",
            "is in the future; tokens issued later would be revoked too",
        );
    }
    let expires_at = raw
        .expires_at
        .and_then(|t| time_field(line, "expires_at", &t, now_secs, errors));
    if let Some(e) = expires_at
        && e <= now_secs
    {
        errors.push(
            line,
            "expires_at",
            "is not in the future: the rule would be dropped at once",
        );
    }
    let kind = kind?;
    if errors.total > before {
        return None;
    }
    let event = Event {
        event_id: ids::bulk_event_id(
            digest,
            line,
            kind.has_cutoff().then_some(cutoff),
            expires_at,
        ),
        action: Action::Revoke(Revoke {
            kind,
            issuer,
            targets,
            cutoff,
            expires_at,
        }),
        reason: raw.reason.unwrap_or_else(|| defaults.reason.clone()),
        actor: defaults.actor.clone(),
        created_at_ms: defaults.now_ms,
    };
    match event.validate() {
        Ok(()) => Some(event),
        Err(EventError::Invalid { field, message }) => {
            let field = if field == "targets" { "target" } else { field };
            errors.push(line, field, message);
            None
        }
        Err(e) => {
            errors.push(line, "", e.to_string());
            None
        }
    }
}

fn time_field(
    line: u64,
    field: &str,
    t: &TimeValue,
    now_secs: i64,
    errors: &mut Errors,
) -> Option<i64> {
    let parsed = match t {
        TimeValue::Unix(n) if *n < 0 => Err("must not be negative".to_owned()),
        TimeValue::Unix(n) => {
            timespec::parse_time(&n.to_string(), now_secs).map_err(|e| e.to_string())
        }
        TimeValue::Text(s) => timespec::parse_time(s, now_secs).map_err(|e| e.to_string()),
    };
    parsed
        .map_err(|message| errors.push(line, field, message))
        .ok()
}

/// What a target of this kind is, for messages.
pub fn target_noun(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::Jti => "token id (jti)",
        RuleKind::Subject => "subject (sub)",
        RuleKind::Session => "session id (sid)",
        RuleKind::Key => "key id (kid)",
        RuleKind::Issuer => "issuer",
    }
}

#[cfg(test)]
mod tests;
