//! What a verified signal means: the claims of a logout token (OpenID Connect Back-Channel
//! Logout 1.0 §2.4, §2.6) or of a SET carrying a CAEP or RISC event (RFC 8417, SSF 1.0,
//! CAEP 1.0, RISC 1.0), mapped to the revocation it calls for, and that revocation as
//! signed events with ids derived from the signal.
//!
//! The mapping (also in `docs/RECEIVER.md`):
//!
//! | signal | names | revocation |
//! |---|---|---|
//! | logout token | `sid` (with or without `sub`) | `session` `sid` |
//! | logout token | `sub` only | `subject` `sub`, cut-off `iat` |
//! | `session-revoked` | a session (opaque id, or complex subject with `session`) | `session` |
//! | `session-revoked` | a user only | `subject`, cut-off `event_timestamp` (else `iat`) |
//! | `credential-change`, `account-disabled`, `account-purged`, `credential-compromise`, `sessions-revoked` | a user | `subject`, cut-off `event_timestamp` (else `iat`) |
//!
//! A logout token with `sid` revokes only that session: the provider ended one session,
//! and the user's other sessions stay valid (a logout elsewhere would otherwise log the
//! user out everywhere). Each revocation is published once per token issuer the provider
//! maps to (the rules are scoped by issuer).

use aws_lc_rs::digest;
use denylist_proto::events::{Action, Event, Revoke, RuleKind};
use serde_json::{Map, Value};

use super::config::{ProviderConfig, SignalType};
use super::token::{SignalError, VerifiedToken, numeric_date};

/// The SSF verification event type (SSF 1.0 §8.1.4): acknowledged, never published.
pub const VERIFICATION_EVENT: &str =
    "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// The SSF stream-updated event type (SSF 1.0 §8.1.5): acknowledged, never published.
pub const STREAM_UPDATED_EVENT: &str =
    "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";

/// The revocation one signal calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// Its type.
    pub signal_type: SignalType,
    /// The `iss` of the logout token or SET.
    pub issuer: String,
    /// Its `jti`.
    pub jti: String,
    /// What is revoked.
    pub target: Target,
}

/// What a signal revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One session (`sid`), in every token issuer of the provider.
    Session(String),
    /// A user's tokens issued at or before `cutoff` (Unix seconds).
    Subject {
        /// The token `sub`.
        sub: String,
        /// The one token issuer the subject belongs to, when the signal says so
        /// (`iss_sub`); else every token issuer of the provider.
        issuer: Option<String>,
        /// Unix seconds.
        cutoff: i64,
    },
}

/// What a SET asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetContent {
    /// A revocation.
    Revoke(Signal),
    /// An SSF verification event: acknowledged only.
    Verification {
        /// The stream verified (`sub_id`'s opaque `id`), if named.
        stream_id: Option<String>,
        /// The `state` the receiver asked for, if any.
        state: Option<String>,
    },
    /// An SSF stream-updated event: acknowledged only.
    StreamUpdated {
        /// The stream (`sub_id`'s opaque `id`), if named.
        stream_id: Option<String>,
        /// Its new status (`enabled`, `paused`, `disabled`).
        status: String,
        /// Why, if said.
        reason: Option<String>,
    },
    /// An event type this provider is not configured to act on: acknowledged only.
    Ignored(SignalType),
    /// An event type this receiver does not know: acknowledged only.
    Unknown(String),
}

/// The revocation a verified logout token calls for (Back-Channel Logout 1.0 §2.6 steps
/// 4–6: the `events` member, `sid` or `sub`, no `nonce`).
pub fn logout_signal(token: &VerifiedToken, issuer: &str) -> Result<Signal, SignalError> {
    let claims = &token.claims;
    let events = claims
        .get("events")
        .ok_or_else(|| SignalError::Malformed("claim `events` is missing".into()))?
        .as_object()
        .ok_or_else(|| SignalError::Malformed("claim `events` is not a JSON object".into()))?;
    match events.get(SignalType::BackchannelLogout.uri()) {
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(SignalError::Malformed(
                "the back-channel logout event member is not a JSON object".into(),
            ));
        }
        None => {
            return Err(SignalError::Malformed(format!(
                "claim `events` has no {} member",
                SignalType::BackchannelLogout.uri()
            )));
        }
    }
    if claims.contains_key("nonce") {
        return Err(SignalError::Malformed(
            "a logout token must not contain `nonce`".into(),
        ));
    }
    let sid = optional_string(claims, "sid")?;
    let sub = optional_string(claims, "sub")?;
    let target = match (sid, sub) {
        (Some(sid), _) => Target::Session(sid),
        (None, Some(sub)) => Target::Subject {
            sub,
            issuer: None,
            cutoff: token.iat,
        },
        (None, None) => {
            return Err(SignalError::Malformed(
                "a logout token must contain `sid` or `sub`".into(),
            ));
        }
    };
    Ok(Signal {
        signal_type: SignalType::BackchannelLogout,
        issuer: issuer.to_owned(),
        jti: token.jti.clone(),
        target,
    })
}

/// What a verified SET asks for (RFC 8417 §2.2, one event per SET as SSF 1.0 requires).
pub fn set_content(
    token: &VerifiedToken,
    provider: &ProviderConfig,
) -> Result<SetContent, SignalError> {
    let claims = &token.claims;
    let events = claims
        .get("events")
        .ok_or_else(|| SignalError::Malformed("claim `events` is missing".into()))?
        .as_object()
        .ok_or_else(|| SignalError::Malformed("claim `events` is not a JSON object".into()))?;
    let mut members = events.iter();
    let (uri, event) = match (members.next(), members.next()) {
        (Some(only), None) => only,
        (None, _) => return Err(SignalError::Malformed("claim `events` is empty".into())),
        (Some(_), Some(_)) => {
            return Err(SignalError::Malformed(
                "claim `events` holds more than one event; one per SET is accepted".into(),
            ));
        }
    };
    let event = event
        .as_object()
        .ok_or_else(|| SignalError::Malformed(format!("event {uri} is not a JSON object")))?;
    // SSF 1.0 §8.1.4.1, §8.1.5: the stream is the `sub_id`, format `opaque`.
    let stream_id = || {
        claims
            .get("sub_id")
            .filter(|s| s["format"] == "opaque")
            .and_then(|s| s["id"].as_str())
            .map(str::to_owned)
    };
    let text = |name: &str| event.get(name).and_then(Value::as_str).map(str::to_owned);
    if uri == VERIFICATION_EVENT {
        return Ok(SetContent::Verification {
            stream_id: stream_id(),
            state: text("state"),
        });
    }
    if uri == STREAM_UPDATED_EVENT {
        let status = text("status").ok_or_else(|| {
            SignalError::Malformed("the stream-updated event has no `status`".into())
        })?;
        return Ok(SetContent::StreamUpdated {
            stream_id: stream_id(),
            status,
            reason: text("reason"),
        });
    }
    let Some(signal_type) = SignalType::from_uri(uri) else {
        return Ok(SetContent::Unknown(uri.clone()));
    };
    if signal_type == SignalType::BackchannelLogout {
        return Err(SignalError::Malformed(
            "a back-channel logout event belongs in a logout token, not a SET".into(),
        ));
    }
    if !provider.events.contains(&signal_type) {
        return Ok(SetContent::Ignored(signal_type));
    }
    if claims.contains_key("sub") {
        // RFC 8417 §2.2 allows `sub`, but SSF 1.0 names subjects with `sub_id`; `sub` alone is
        // too ambiguous (whose subject?) to revoke on.
        tracing::debug!("SET carries `sub`; the subject is taken from `sub_id`");
    }
    // SSF 1.0 puts the subject in `sub_id`; CAEP/RISC drafts (and some transmitters) in the
    // event's `subject`.
    let subject = claims
        .get("sub_id")
        .or_else(|| event.get("subject"))
        .ok_or_else(|| {
            SignalError::Malformed(
                "the SET names no subject (`sub_id` or the event's `subject`)".into(),
            )
        })?;
    let subject = parse_subject(subject, provider)?;
    let cutoff = match event.get("event_timestamp") {
        Some(ts) => event_time(ts).ok_or_else(|| {
            SignalError::Malformed("`event_timestamp` is not a NumericDate".into())
        })?,
        None => token.iat,
    };
    let target = match (signal_type, subject.session, subject.user) {
        (SignalType::SessionRevoked, Some(sid), _) => Target::Session(sid),
        (_, _, Some((sub, issuer))) => Target::Subject {
            sub,
            issuer,
            cutoff,
        },
        (_, _, None) => {
            return Err(SignalError::Malformed(format!(
                "{} needs a user subject (iss_sub, email, or a complex subject with `user`)",
                signal_type.as_str()
            )));
        }
    };
    Ok(SetContent::Revoke(Signal {
        signal_type,
        issuer: provider.issuer.clone(),
        jti: token.jti.clone(),
        target,
    }))
}

/// A subject: a session id and/or a user (`sub` and, for `iss_sub`, its issuer).
#[derive(Debug, Default)]
struct Subject {
    session: Option<String>,
    user: Option<(String, Option<String>)>,
}

/// Parses a subject identifier (RFC 9493 formats `iss_sub`, `email`, `opaque`; the SSF
/// complex subject with `user` and `session`).
fn parse_subject(v: &Value, provider: &ProviderConfig) -> Result<Subject, SignalError> {
    let o = v
        .as_object()
        .ok_or_else(|| SignalError::Malformed("the subject is not a JSON object".into()))?;
    let format = o.get("format").and_then(Value::as_str);
    if format == Some("complex")
        || (format.is_none() && (o.contains_key("user") || o.contains_key("session")))
    {
        let mut subject = Subject::default();
        if let Some(user) = o.get("user") {
            subject.user = Some(parse_user(user, provider)?);
        }
        if let Some(session) = o.get("session") {
            let so = session.as_object().ok_or_else(|| {
                SignalError::Malformed("the complex subject's `session` is not an object".into())
            })?;
            subject.session = Some(opaque_id(so, "session")?);
        }
        if subject.user.is_none() && subject.session.is_none() {
            return Err(SignalError::Malformed(
                "the complex subject names neither `user` nor `session`".into(),
            ));
        }
        return Ok(subject);
    }
    if format == Some("opaque") {
        // An opaque subject names a session (CAEP `session-revoked` examples); a user needs
        // `iss_sub` or `email` to be matched against token `sub`s.
        return Ok(Subject {
            session: Some(opaque_id(o, "subject")?),
            user: None,
        });
    }
    Ok(Subject {
        session: None,
        user: Some(parse_user(v, provider)?),
    })
}

/// A user subject: `(sub, the one token issuer it belongs to)`.
fn parse_user(
    v: &Value,
    provider: &ProviderConfig,
) -> Result<(String, Option<String>), SignalError> {
    let o = v
        .as_object()
        .ok_or_else(|| SignalError::Malformed("the user subject is not a JSON object".into()))?;
    let field = |name: &str| -> Result<String, SignalError> {
        match o.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(SignalError::Malformed(format!(
                "the subject's `{name}` is missing or not a non-empty string"
            ))),
        }
    };
    match o.get("format").and_then(Value::as_str) {
        Some("iss_sub") => {
            let iss = field("iss")?;
            let sub = field("sub")?;
            if !provider.token_issuers().contains(&iss) {
                return Err(SignalError::NotAllowed(format!(
                    "subject issuer {iss:?} is not one of provider {}'s token issuers",
                    provider.name
                )));
            }
            Ok((sub, Some(iss)))
        }
        Some("email") => {
            let email = field("email")?;
            let sub = provider
                .email_subjects
                .get(&email)
                .or_else(|| provider.email_subjects.get(&email.to_ascii_lowercase()))
                .ok_or_else(|| {
                    SignalError::NotAllowed(format!(
                        "email subject {email:?} has no mapping in providers.email_subjects"
                    ))
                })?;
            Ok((sub.clone(), None))
        }
        Some(other) => Err(SignalError::Malformed(format!(
            "subject format {other:?} cannot name a user here (iss_sub or email)"
        ))),
        None => Err(SignalError::Malformed("the subject has no `format`".into())),
    }
}

fn opaque_id(o: &Map<String, Value>, what: &str) -> Result<String, SignalError> {
    match (o.get("format").and_then(Value::as_str), o.get("id")) {
        (Some("opaque"), Some(Value::String(id))) if !id.is_empty() => Ok(id.clone()),
        _ => Err(SignalError::Malformed(format!(
            "the {what} must be {{\"format\":\"opaque\",\"id\":\"…\"}}"
        ))),
    }
}

/// `event_timestamp`: a NumericDate. CAEP 1.0's examples give milliseconds
/// (`1615304991643`); a value too large to be seconds (past the year 5000) is read as them.
fn event_time(v: &Value) -> Option<i64> {
    let t = numeric_date(v)?;
    Some(if t > 100_000_000_000 { t / 1000 } else { t })
}

fn optional_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, SignalError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 => Ok(Some(s.clone())),
        Some(_) => Err(SignalError::Malformed(format!(
            "claim `{name}` must be a non-empty string of at most 1024 bytes"
        ))),
    }
}

/// The revocation events of a signal, one per token issuer, for `provider` (its name is
/// the actor). Event ids are derived from the signal (`rcv-` and a SHA-256 prefix over its
/// issuer, `jti` and the token issuer), so a retry or a second replica publishes the same
/// ids and JetStream stores one copy.
pub fn events_for(signal: &Signal, provider: &ProviderConfig, now_ms: i64) -> Vec<Event> {
    let issuers = match &signal.target {
        Target::Subject {
            issuer: Some(iss), ..
        } => vec![iss.clone()],
        _ => provider.token_issuers(),
    };
    let (kind, target, cutoff) = match &signal.target {
        Target::Session(sid) => (RuleKind::Session, sid, 0),
        Target::Subject { sub, cutoff, .. } => (RuleKind::Subject, sub, *cutoff),
    };
    issuers
        .into_iter()
        .map(|token_issuer| Event {
            event_id: event_id(&signal.issuer, &signal.jti, &token_issuer),
            action: Action::Revoke(Revoke {
                kind,
                issuer: token_issuer,
                targets: vec![target.clone()],
                cutoff,
                expires_at: None,
            }),
            reason: truncate(
                format!("{} jti={}", signal.signal_type.as_str(), signal.jti),
                denylist_proto::events::MAX_FIELD_LEN,
            ),
            actor: format!("receiver/{}", provider.name),
            created_at_ms: now_ms,
        })
        .collect()
}

/// `rcv-` and 32 hex digits of SHA-256 over the signal's issuer, `jti` and token issuer.
pub fn event_id(signal_issuer: &str, jti: &str, token_issuer: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [signal_issuer, jti, token_issuer] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let hex: String = ctx.finish().as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("rcv-{hex}")
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
