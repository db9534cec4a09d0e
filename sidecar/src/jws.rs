//! The compact JWS (RFC 7515) as the sidecar reads it, and denylist's policy on top
//! of jsonwebtoken's reading.
//!
//! jsonwebtoken decodes: [`read_header`] reads the protected header with
//! [`jsonwebtoken::decode_header`], and the Verify path checks the signature and the
//! registered claims with [`jsonwebtoken::decode`]. This module adds what jsonwebtoken
//! does not decide, each with its own [`Reason`]:
//!
//! - the size bound and the segment count ([`split`]), before anything is decoded;
//! - header policy: `alg: none`, JWE and nested tokens, `crit`, `b64`, an unsupported
//!   algorithm. `jku`, `x5u`, `jwk` and `x5c` are never read: keys come only from
//!   configuration. When jsonwebtoken cannot read a header at all, [`read_header`] reads
//!   it once more with serde_json to tell *why* (an `alg: none` token is refused with
//!   its own reason, not as a header jsonwebtoken does not know);
//! - the payload as a strict JSON object ([`StrictObject`]: no repeated top-level
//!   names, nesting bounded) and its registered claims' types ([`Claims`]).
//!
//! No hand-written JSON or base64: serde_json and the `base64` crate read everything.
//! Every failure maps to one [`Reason`] with a short detail that never echoes the token.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use denylist_proto::pb::Reason;
use serde_json::{Map, Value};

use crate::algorithm::Algorithm;

mod claims;
mod strict;

pub use claims::Claims;
pub use strict::StrictObject;

/// Longest decoded protected header accepted: what fits in an 8 KiB token (the default
/// `verify.max_token_bytes`) with room to spare. Keys never come from the header, so
/// nothing legitimate needs more.
pub const MAX_HEADER_BYTES: usize = 8192;

/// Why a token was rejected: the reason code and a short, token-free explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reason code returned to callers.
    pub reason: Reason,
    /// Human-readable detail.
    pub detail: Cow<'static, str>,
}

impl Rejection {
    /// A rejection with a fixed detail.
    pub const fn new(reason: Reason, detail: &'static str) -> Self {
        Self {
            reason,
            detail: Cow::Borrowed(detail),
        }
    }

    /// A rejection with a formatted detail.
    pub fn with(reason: Reason, detail: String) -> Self {
        Self {
            reason,
            detail: Cow::Owned(detail),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str_name(), self.detail)
    }
}

/// The three base64url segments of a compact JWS, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub struct Segments<'t> {
    /// The protected header.
    pub header: &'t str,
    /// The payload.
    pub payload: &'t str,
    /// The signature (may be empty: [`read_header`] comes first, so that an unsigned
    /// `alg: none` token gets its own reason).
    pub signature: &'t str,
    /// `header.payload.`: all [`jsonwebtoken::decode_header`] needs, which searches
    /// the token for its dots from the end (byte by byte: an RSA signature is 342).
    through_payload: &'t str,
}

/// Checks the size bound, then splits a compact JWS into its segments. Nothing is
/// decoded: a token over `max_len` bytes is refused before anything else.
pub fn split(token: &str, max_len: usize) -> Result<Segments<'_>, Rejection> {
    if token.len() > max_len {
        return Err(Rejection::with(
            Reason::TokenTooLarge,
            format!("token is {} bytes; the limit is {max_len}", token.len()),
        ));
    }
    if token.is_empty() {
        return Err(Rejection::new(Reason::Malformed, "empty token"));
    }
    let Some((header, payload, signature)) = segments(token) else {
        let dots = token.matches('.').count();
        return Err(if dots == 4 {
            Rejection::new(
                Reason::EncryptedOrNested,
                "five segments: a JWE (encrypted token) is not accepted",
            )
        } else {
            Rejection::with(
                Reason::Malformed,
                format!("{} segments; a compact JWS has 3", dots + 1),
            )
        });
    };
    if header.is_empty() || payload.is_empty() {
        return Err(Rejection::new(
            Reason::Malformed,
            "empty header or payload segment",
        ));
    }
    // The decoded length, from the text's: refused before jsonwebtoken decodes it.
    let decoded = header.len() / 4 * 3 + (header.len() % 4).saturating_sub(1);
    if decoded > MAX_HEADER_BYTES {
        return Err(Rejection::with(
            Reason::Malformed,
            format!("header is {decoded} bytes; the limit is {MAX_HEADER_BYTES}"),
        ));
    }
    Ok(Segments {
        header,
        payload,
        signature,
        through_payload: &token[..header.len() + payload.len() + 2],
    })
}

/// The three segments of a token with exactly two dots.
fn segments(token: &str) -> Option<(&str, &str, &str)> {
    // The memchr crate's search is vectorised; `str::split` reads a word at a time,
    // and the whole token is searched (there must be no third dot).
    let dot = |s: &str| memchr::memchr(b'.', s.as_bytes());
    let first = dot(token)?;
    let rest = &token[first + 1..];
    let second = dot(rest)?;
    let signature = &rest[second + 1..];
    if dot(signature).is_some() {
        return None;
    }
    Some((&token[..first], &rest[..second], signature))
}

/// What the Verify path takes from a protected header that passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `alg`.
    pub alg: Algorithm,
    /// `kid`, if any.
    pub kid: Option<String>,
}

/// Reads the protected header of a token [`split`] with [`jsonwebtoken::decode_header`]
/// and applies the policy: refuses a JWE or nested token, `crit`, `b64` and any
/// algorithm but the supported ones. When jsonwebtoken cannot read the header, the
/// reason comes from reading it again with serde_json, in the order that decides it:
/// the JSON and the types of `alg`, `kid`, `cty`, `crit` ([`Reason::Malformed`]), then
/// `alg: none`, a JWE or nested token, `crit`, `b64`, an unsupported algorithm.
///
/// jsonwebtoken reads a registered member whose value is `null` as absent, and keeps
/// the last of a repeated unregistered member; it refuses a repeated registered one.
pub fn read_header(segments: &Segments<'_>) -> Result<Header, Rejection> {
    let h = match jsonwebtoken::decode_header(segments.through_payload) {
        Ok(h) => h,
        Err(e) => return Err(explain_unreadable_header(segments.header, &e)),
    };
    if h.enc.is_some() || h.zip.is_some() {
        return Err(JWE_MEMBERS);
    }
    if h.cty.as_deref().is_some_and(is_nested) {
        return Err(NESTED);
    }
    if let Some(crit) = &h.crit {
        return Err(critical(crit.len()));
    }
    if h.extras.inner().contains_key("b64") {
        return Err(UNENCODED_PAYLOAD);
    }
    let alg = Algorithm::from_jwt(h.alg).ok_or_else(|| unsupported(&format!("{:?}", h.alg)))?;
    Ok(Header { alg, kid: h.kid })
}

const JWE_MEMBERS: Rejection = Rejection::new(
    Reason::EncryptedOrNested,
    "header has `enc`/`zip`: a JWE is not accepted",
);

const NESTED: Rejection = Rejection::new(
    Reason::EncryptedOrNested,
    "`cty: JWT` marks a nested token, which is not accepted",
);

const UNENCODED_PAYLOAD: Rejection = Rejection::new(
    Reason::UnsupportedCriticalHeader,
    "`b64` (unencoded payload) is not supported",
);

fn is_nested(cty: &str) -> bool {
    cty.eq_ignore_ascii_case("JWT")
}

/// RFC 7515 §4.1.11: recipients must reject tokens naming critical extensions they do
/// not understand. We understand none (not even `b64`, RFC 7797).
fn critical(count: usize) -> Rejection {
    Rejection::with(
        Reason::UnsupportedCriticalHeader,
        if count == 0 {
            "`crit` is present but empty".to_owned()
        } else {
            format!("`crit` names {count} unsupported extension(s)")
        },
    )
}

fn unsupported(alg: &str) -> Rejection {
    Rejection::with(
        Reason::AlgorithmNotAllowed,
        format!("algorithm {:?} is not supported", truncate(alg, 16)),
    )
}

/// Why jsonwebtoken could not read a header: read again with the `base64` crate and
/// serde_json ([`StrictObject`]), the members checked in the order that decides the
/// reason — the JSON itself and the types of `alg`, `kid`, `cty` and `crit`
/// ([`Reason::Malformed`]), then `alg: none` in any letter case, a JWE or nested
/// token, `crit`, `b64`, an unsupported algorithm. A header none of these explain has a
/// registered member jsonwebtoken cannot read (a `jwk` that is no JWK, a `typ` that is
/// no string): [`Reason::Malformed`].
fn explain_unreadable_header(header: &str, error: &jsonwebtoken::errors::Error) -> Rejection {
    match header_fault(header) {
        Err(rejection) => rejection,
        Ok(()) => Rejection::with(Reason::Malformed, format!("header: {}", describe(error))),
    }
}

fn header_fault(header: &str) -> Result<(), Rejection> {
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Rejection::new(Reason::Malformed, "header is not base64url"))?;
    let h = strict::parse(&json, "header")?;
    let alg = string_member(&h, "alg")?;
    string_member(&h, "kid")?;
    let cty = string_member(&h, "cty")?;
    let crit = match h.get("crit") {
        None => None,
        Some(Value::Array(names)) => Some(names.len()),
        Some(_) => {
            return Err(Rejection::new(
                Reason::Malformed,
                "header `crit` must be an array",
            ));
        }
    };
    let alg = alg.ok_or(Rejection::new(Reason::Malformed, "header has no `alg`"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(Rejection::new(
            Reason::AlgorithmNone,
            "`alg: none` (an unsecured token) is never accepted",
        ));
    }
    if h.contains_key("enc") || h.contains_key("zip") {
        return Err(JWE_MEMBERS);
    }
    if cty.is_some_and(is_nested) {
        return Err(NESTED);
    }
    if let Some(count) = crit {
        return Err(critical(count));
    }
    if h.contains_key("b64") {
        return Err(UNENCODED_PAYLOAD);
    }
    if Algorithm::from_name(alg).is_none() {
        return Err(unsupported(alg));
    }
    Ok(())
}

/// A header member that must be a string when present (`null` included).
fn string_member<'h>(
    header: &'h Map<String, Value>,
    name: &str,
) -> Result<Option<&'h str>, Rejection> {
    match header.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Rejection::with(
            Reason::Malformed,
            format!("header `{name}` must be a string"),
        )),
    }
}

/// jsonwebtoken's error, without the value it may quote.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::Json(e) => format!(
            "a registered member jsonwebtoken cannot read (column {})",
            e.column()
        ),
        ErrorKind::Base64(_) => "not base64url".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Decodes a payload segment (`base64` crate) and reads it as a [`StrictObject`]. Every
/// failure is [`Reason::Malformed`].
pub fn decode_payload(payload: &str) -> Result<Map<String, Value>, Rejection> {
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| Rejection::new(Reason::Malformed, "payload is not base64url"))?;
    strict::parse(&json, "payload")
}

/// The first `max` characters of `s`: names and values from a token are cut short
/// before they go into a detail.
fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;
