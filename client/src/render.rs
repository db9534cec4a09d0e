//! What `denylistctl` prints: aligned text tables (laggards highlighted on a colour terminal
//! and named in a `STATE` column everywhere) and JSON documents for scripts. Pure functions
//! from data to text, so the output is tested without a terminal.

use denylist_proto::events::{Action, Event, RuleKind};
use denylist_proto::pb;
use serde_json::{Value, json};

use crate::fleet;
use crate::replay::{LiveRule, StoredEvent};
use crate::stream::StreamSummary;
use crate::timespec::{format_unix, format_unix_ms};

/// Longest cell a table shows; longer text is cut with `…` (JSON output is never cut).
pub const MAX_CELL_CHARS: usize = 60;

/// A text table with a header row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<(Vec<String>, bool)>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push((cells, false));
    }

    /// Adds a row shown highlighted on a colour terminal.
    pub fn highlighted_row(&mut self, cells: Vec<String>) {
        self.rows.push((cells, true));
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text: columns padded to their widest cell, two spaces apart, trailing
    /// spaces trimmed; highlighted rows in bold red when `color`.
    pub fn render(&self, color: bool) -> String {
        let cut: Vec<(Vec<String>, bool)> = self
            .rows
            .iter()
            .map(|(cells, hl)| (cells.iter().map(|c| truncate(c)).collect(), *hl))
            .collect();
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for (cells, _) in &cut {
            for (i, cell) in cells.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                out.push_str(cell);
                if i + 1 < columns {
                    out.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = line(&self.headers);
        out.push('\n');
        for (cells, highlighted) in &cut {
            let text = line(cells);
            if *highlighted && color {
                out.push_str("\x1b[1;31m");
                out.push_str(&text);
                out.push_str("\x1b[0m");
            } else {
                out.push_str(&text);
            }
            out.push('\n');
        }
        out
    }
}

fn truncate(s: &str) -> String {
    let s = s.replace(['\n', '\r', '\t'], " ");
    if s.chars().count() <= MAX_CELL_CHARS {
        s
    } else {
        let mut cut: String = s.chars().take(MAX_CELL_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

fn opt_time(t: Option<i64>) -> String {
    t.map_or_else(|| "-".to_owned(), format_unix)
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// Live rules as a table.
pub fn rules_table(rules: &[LiveRule]) -> Table {
    let mut t = Table::new([
        "EVENT ID", "SEQ", "KIND", "ISSUER", "TARGET", "CUTOFF", "EXPIRES", "REASON", "ACTOR",
    ]);
    for r in rules {
        t.row(vec![
            r.event_id.clone(),
            r.sequence.to_string(),
            r.kind.to_string(),
            r.issuer.clone(),
            or_dash(&r.target),
            opt_time(r.cutoff),
            r.expires_at.map_or_else(
                || {
                    if r.kind == RuleKind::Key {
                        "until lifted"
                    } else {
                        "issuer max"
                    }
                    .to_owned()
                },
                format_unix,
            ),
            or_dash(&r.reason),
            or_dash(&r.actor),
        ]);
    }
    t
}

/// Live rules as JSON: an array of objects (times as Unix seconds and RFC 3339).
pub fn rules_json(rules: &[LiveRule]) -> Value {
    Value::Array(
        rules
            .iter()
            .map(|r| {
                json!({
                    "event_id": r.event_id,
                    "sequence": r.sequence,
                    "kind": r.kind.as_str(),
                    "issuer": r.issuer,
                    "target": r.target,
                    "cutoff": r.cutoff,
                    "expires_at": r.expires_at,
                    "reason": r.reason,
                    "actor": r.actor,
                    "created_at": format_unix_ms(r.created_at_ms),
                })
            })
            .collect(),
    )
}

fn targets_cell(targets: &[String]) -> String {
    match targets {
        [] => "-".to_owned(),
        [one] => one.clone(),
        [first, second] => format!("{first}, {second}"),
        [first, rest @ ..] => format!("{first} (+{} more)", rest.len()),
    }
}

/// Stored events as a table.
pub fn history_table(events: &[StoredEvent]) -> Table {
    let mut t = Table::new([
        "SEQ", "STORED", "EVENT ID", "ACTION", "KIND", "ISSUER", "TARGETS", "REASON", "ACTOR",
        "KEY",
    ]);
    for s in events {
        let e = &s.event;
        let (action, kind, issuer, targets) = match &e.action {
            Action::Revoke(r) => (
                "revoke",
                r.kind.to_string(),
                r.issuer.clone(),
                targets_cell(&r.targets),
            ),
            Action::Lift { event_ids } => (
                "lift",
                "-".to_owned(),
                "-".to_owned(),
                targets_cell(event_ids),
            ),
        };
        t.row(vec![
            s.sequence.to_string(),
            format_unix_ms(s.stored_at_ms),
            e.event_id.clone(),
            action.to_owned(),
            kind,
            issuer,
            targets,
            or_dash(&e.reason),
            or_dash(&e.actor),
            s.key_id.clone(),
        ]);
    }
    t
}

/// One event as JSON: every field, times as Unix numbers (as in the event) plus
/// `created_at` in RFC 3339.
pub fn event_json(e: &Event) -> Value {
    let mut v = json!({
        "event_id": e.event_id,
        "reason": e.reason,
        "actor": e.actor,
        "created_at_ms": e.created_at_ms,
        "created_at": format_unix_ms(e.created_at_ms),
    });
    match &e.action {
        Action::Revoke(r) => {
            v["action"] = json!("revoke");
            v["kind"] = json!(r.kind.as_str());
            v["issuer"] = json!(r.issuer);
            v["targets"] = json!(r.targets);
            v["cutoff"] = json!(r.kind.has_cutoff().then_some(r.cutoff));
            v["expires_at"] = json!(r.expires_at);
        }
        Action::Lift { event_ids } => {
            v["action"] = json!("lift");
            v["targets"] = json!(event_ids);
        }
    }
    v
}

/// Stored events as JSON: an array of [`event_json`] objects with the stream's `sequence`,
/// `stored_at`, `subject`, signing `key_id` and `signature` (`verified` or `unchecked`).
pub fn history_json(events: &[StoredEvent]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|s| {
                let mut v = event_json(&s.event);
                v["sequence"] = json!(s.sequence);
                v["stored_at"] = json!(format_unix_ms(s.stored_at_ms));
                v["subject"] = json!(s.subject);
                v["key_id"] = json!(s.key_id);
                v["signature"] = json!(s.trust);
                v
            })
            .collect(),
    )
}

/// Events not yet published (a dry run) as a table.
pub fn events_table(events: &[Event]) -> Table {
    let mut t = Table::new([
        "EVENT ID", "ACTION", "KIND", "ISSUER", "TARGETS", "CUTOFF", "EXPIRES", "REASON", "ACTOR",
    ]);
    for e in events {
        let (action, kind, issuer, targets, cutoff, expires) = match &e.action {
            Action::Revoke(r) => (
                "revoke",
                r.kind.to_string(),
                r.issuer.clone(),
                targets_cell(&r.targets),
                opt_time(r.kind.has_cutoff().then_some(r.cutoff)),
                opt_time(r.expires_at),
            ),
            Action::Lift { event_ids } => (
                "lift",
                "-".to_owned(),
                "-".to_owned(),
                targets_cell(event_ids),
                "-".to_owned(),
                "-".to_owned(),
            ),
        };
        t.row(vec![
            e.event_id.clone(),
            action.to_owned(),
            kind,
            issuer,
            targets,
            cutoff,
            expires,
            or_dash(&e.reason),
            or_dash(&e.actor),
        ]);
    }
    t
}

/// A fleet member's state in words: `ok`, `not ready`, `stale`, or `behind N`.
pub fn member_state(m: &pb::FleetMember, last: Option<u64>) -> String {
    let mut states = Vec::new();
    if !m.ready {
        states.push("not ready".to_owned());
    }
    if m.stale {
        states.push("stale".to_owned());
    }
    if let Some(last) = last
        && m.denylist_sequence < last
    {
        states.push(format!("behind {}", last - m.denylist_sequence));
    }
    if states.is_empty() {
        "ok".to_owned()
    } else {
        states.join(", ")
    }
}

/// Fleet answers as a table sorted by sequence, laggards highlighted.
pub fn fleet_table(members: &[pb::FleetMember], last: Option<u64>) -> Table {
    let mut t = Table::new([
        "NAME", "READY", "STALE", "SEQUENCE", "AGE", "ENTRIES", "VERSION", "STATE",
    ]);
    let mut sorted = members.to_vec();
    fleet::sort(&mut sorted);
    for m in &sorted {
        let cells = vec![
            or_dash(&m.name),
            yes_no(m.ready),
            yes_no(m.stale),
            m.denylist_sequence.to_string(),
            format_age_ms(m.denylist_age_ms),
            m.entries.to_string(),
            or_dash(&m.version),
            member_state(m, last),
        ];
        if fleet::is_laggard(m, last) {
            t.highlighted_row(cells);
        } else {
            t.row(cells);
        }
    }
    t
}

/// Fleet answers as JSON.
pub fn fleet_json(members: &[pb::FleetMember], undecodable: usize, last: Option<u64>) -> Value {
    let mut sorted = members.to_vec();
    fleet::sort(&mut sorted);
    json!({
        "stream_last_sequence": last,
        "members": sorted.iter().map(|m| json!({
            "name": m.name,
            "ready": m.ready,
            "stale": m.stale,
            "denylist_sequence": m.denylist_sequence,
            "denylist_age_ms": m.denylist_age_ms,
            "entries": m.entries,
            "version": m.version,
            "laggard": fleet::is_laggard(m, last),
            "state": member_state(m, last),
        })).collect::<Vec<_>>(),
        "laggards": sorted.iter().filter(|m| fleet::is_laggard(m, last)).count(),
        "undecodable_replies": undecodable,
    })
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// Milliseconds as a short age: `850ms`, `12.3s`, `4m 10s`.
pub fn format_age_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
    }
}

fn format_secs(secs: u64) -> String {
    if secs == 0 {
        "forever".to_owned()
    } else {
        humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
    }
}

/// The stream's configuration and state as `key: value` lines, then any problems.
pub fn stream_text(s: &StreamSummary) -> String {
    let republish = s.republish.as_ref().map_or_else(
        || "none".to_owned(),
        |r| {
            format!(
                "{} -> {}{}",
                r.source,
                r.destination,
                if r.headers_only {
                    " (headers only)"
                } else {
                    ""
                }
            )
        },
    );
    let mut lines = vec![
        ("stream", s.name.clone()),
        ("subjects", s.subjects.join(", ")),
        ("storage", s.storage.clone()),
        ("replicas", s.replicas.to_string()),
        ("max age", format_secs(s.max_age_secs)),
        ("duplicate window", format_secs(s.duplicate_window_secs)),
        ("allow direct", yes_no(s.allow_direct)),
        ("republish", republish),
        ("messages", s.messages.to_string()),
        ("bytes", s.bytes.to_string()),
        ("first sequence", s.first_sequence.to_string()),
        ("last sequence", s.last_sequence.to_string()),
        (
            "first message",
            s.first_time.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "last message",
            s.last_time.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("consumers", s.consumers.to_string()),
    ];
    if let Some(leader) = &s.leader {
        lines.push(("leader", leader.clone()));
    }
    let mut out = key_values(&lines);
    for p in &s.problems {
        out.push_str(&format!("warning: {p}\n"));
    }
    out
}

fn key_values(lines: &[(&str, String)]) -> String {
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in lines {
        out.push_str(&format!("{:<width$} {v}\n", format!("{k}:")));
    }
    out
}

/// One sidecar's `Status` as text.
pub fn status_text(s: &pb::StatusResponse) -> String {
    let mut lines = vec![
        ("name", or_dash(&s.name)),
        ("version", or_dash(&s.version)),
        ("mode", or_dash(&s.mode)),
        ("ready", yes_no(s.ready)),
        ("stale", yes_no(s.stale)),
        ("denylist sequence", s.denylist_sequence.to_string()),
        ("denylist age", format_age_ms(s.denylist_age_ms)),
        ("entries", s.entries.to_string()),
        ("bloom bytes", s.bloom_bytes.to_string()),
        ("keys", s.keys.to_string()),
    ];
    lines.push(("issuers", s.issuers.len().to_string()));
    let mut out = key_values(&lines);
    if !s.issuers.is_empty() {
        let mut t = Table::new([
            "ISSUER",
            "SOURCE",
            "KEYS",
            "LAST REFRESH",
            "FAILURES",
            "LAST ERROR",
        ]);
        for i in &s.issuers {
            let cells = vec![
                i.issuer.clone(),
                i.source.clone(),
                i.keys.to_string(),
                if i.last_refresh_ms > 0 {
                    format_unix_ms(i.last_refresh_ms)
                } else {
                    "never".to_owned()
                },
                i.fetch_failures.to_string(),
                or_dash(&i.last_error),
            ];
            if i.last_error.is_empty() {
                t.row(cells)
            } else {
                t.highlighted_row(cells)
            }
        }
        out.push('\n');
        out.push_str(&t.render(false));
    }
    out
}

/// One sidecar's `Status` as JSON.
pub fn status_json(s: &pb::StatusResponse) -> Value {
    json!({
        "name": s.name,
        "version": s.version,
        "mode": s.mode,
        "ready": s.ready,
        "stale": s.stale,
        "denylist_sequence": s.denylist_sequence,
        "denylist_age_ms": s.denylist_age_ms,
        "entries": s.entries,
        "bloom_bytes": s.bloom_bytes,
        "keys": s.keys,
        "issuers": s.issuers.iter().map(|i| json!({
            "issuer": i.issuer,
            "source": i.source,
            "keys": i.keys,
            "last_refresh_ms": i.last_refresh_ms,
            "last_error": i.last_error,
            "fetch_failures": i.fetch_failures,
        })).collect::<Vec<_>>(),
    })
}

fn reason_name(reason: i32) -> &'static str {
    pb::Reason::try_from(reason)
        .unwrap_or(pb::Reason::Unspecified)
        .as_str_name()
}

fn rule_kind_name(kind: i32) -> &'static str {
    pb::RuleKind::try_from(kind)
        .ok()
        .and_then(RuleKind::from_proto)
        .map_or("unknown", RuleKind::as_str)
}

/// A `Verify` answer for people: verdict, reason, detail, claims, revocation.
pub fn verify_text(a: &pb::VerifyResponse) -> String {
    let mut lines = vec![
        (
            "verdict",
            if a.valid { "VALID" } else { "REJECTED" }.to_owned(),
        ),
        ("reason", reason_name(a.reason).to_owned()),
    ];
    if !a.detail.is_empty() {
        lines.push(("detail", a.detail.clone()));
    }
    if let Some(c) = &a.claims {
        lines.push(("issuer", or_dash(&c.iss)));
        lines.push(("subject", or_dash(&c.sub)));
        lines.push((
            "audience",
            if c.aud.is_empty() {
                "-".to_owned()
            } else {
                c.aud.join(", ")
            },
        ));
        lines.push(("token id", or_dash(&c.jti)));
        if !c.sid.is_empty() {
            lines.push(("session", c.sid.clone()));
        }
        lines.push(("key id", or_dash(&c.kid)));
        lines.push(("algorithm", or_dash(&c.alg)));
        lines.push(("issued at", opt_time(c.iat)));
        if c.nbf.is_some() {
            lines.push(("not before", opt_time(c.nbf)));
        }
        lines.push((
            "expires",
            if c.exp > 0 {
                format_unix(c.exp)
            } else {
                "-".to_owned()
            },
        ));
    }
    if let Some(r) = &a.revocation {
        lines.push((
            "revocation rule",
            format!("{} rule, event {}", rule_kind_name(r.kind), r.event_id),
        ));
        if !r.reason.is_empty() {
            lines.push(("revocation reason", r.reason.clone()));
        }
        if !r.actor.is_empty() {
            lines.push(("revoked by", r.actor.clone()));
        }
        if r.created_at_ms > 0 {
            lines.push(("revoked at", format_unix_ms(r.created_at_ms)));
        }
        if r.cutoff > 0 {
            lines.push(("cutoff", format_unix(r.cutoff)));
        }
    }
    lines.push(("denylist sequence", a.denylist_sequence.to_string()));
    lines.push((
        "denylist age",
        format!(
            "{}{}",
            format_age_ms(a.denylist_age_ms),
            if a.stale { " (stale)" } else { "" }
        ),
    ));
    key_values(&lines)
}

/// A `Verify` answer as JSON (the token itself is never included).
pub fn verify_json(a: &pb::VerifyResponse) -> Value {
    json!({
        "valid": a.valid,
        "reason": reason_name(a.reason),
        "detail": a.detail,
        "claims": a.claims.as_ref().map(|c| json!({
            "iss": c.iss,
            "sub": c.sub,
            "aud": c.aud,
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "jti": c.jti,
            "kid": c.kid,
            "sid": c.sid,
            "alg": c.alg,
            "payload": c.payload.as_ref().map(struct_to_json),
        })),
        "revocation": a.revocation.as_ref().map(|r| json!({
            "kind": rule_kind_name(r.kind),
            "event_id": r.event_id,
            "reason": r.reason,
            "issuer": r.issuer,
            "target": r.target,
            "cutoff": r.cutoff,
            "actor": r.actor,
            "created_at_ms": r.created_at_ms,
        })),
        "denylist_sequence": a.denylist_sequence,
        "denylist_age_ms": a.denylist_age_ms,
        "stale": a.stale,
    })
}

/// A protobuf `Struct` as JSON.
pub fn struct_to_json(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => {
            // Claims like `exp` are integers; print them without a fraction.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                json!(*n as i64)
            } else {
                json!(n)
            }
        }
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
    }
}

#[cfg(test)]
mod tests;
