//! Compact JWS parsing (RFC 7515): splitting, the protected header, the signature
//! bytes and — only after the signature has been checked — the registered claims.
//!
//! Nothing here trusts its input. Every failure maps to one [`Reason`] with a short
//! detail that never echoes the token. The payload is not interpreted before its
//! signature is verified, with one narrow exception: when several issuers are
//! configured and the header's `kid` does not identify one, [`peek_issuer`] reads
//! `iss` to choose whose keys to try; nothing else of the payload is read until the
//! signature holds.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use denylist_proto::pb::Reason;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::algorithm::Algorithm;

/// Deepest JSON nesting accepted in a header or payload. Real tokens nest two or
/// three levels; deep nesting only serves to exhaust a downstream parser's stack.
const MAX_JSON_DEPTH: usize = 32;

/// Longest signature accepted (RSA-4096 is 512 bytes).
const MAX_SIGNATURE_LEN: usize = 512;

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

/// The parts of a compact JWS, with the header parsed and the signature decoded.
#[derive(Debug)]
pub struct Jws<'t> {
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'t str,
    /// The base64url payload segment (not decoded until the signature holds).
    pub payload_b64: &'t str,
    /// The header's algorithm.
    pub alg: Algorithm,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    signature: SignatureBytes,
}

/// A decoded signature on the stack: no allocation on the hot path.
struct SignatureBytes {
    buf: [u8; MAX_SIGNATURE_LEN],
    len: usize,
}

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureBytes({} bytes)", self.len)
    }
}

impl Jws<'_> {
    /// The decoded signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature.buf[..self.signature.len]
    }
}

/// The protected header members we read. Unknown members are ignored; a
/// duplicated member is an error (serde rejects duplicate fields of a struct).
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cty: Option<Cow<'a, str>>,
    #[serde(default)]
    enc: Option<IgnoredAny>,
    #[serde(default)]
    zip: Option<IgnoredAny>,
    #[serde(default)]
    crit: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    b64: Option<IgnoredAny>,
    // `jku`, `x5u`, `jwk`, `x5c` are deliberately not read: keys only ever come from
    // configuration, never from the token that is being checked.
}

/// Splits a compact JWS, parses its header and decodes its signature.
pub fn parse(token: &str, max_len: usize) -> Result<Jws<'_>, Rejection> {
    if token.len() > max_len {
        return Err(Rejection::with(
            Reason::TokenTooLarge,
            format!("token is {} bytes; the limit is {max_len}", token.len()),
        ));
    }
    if token.is_empty() {
        return Err(Rejection::new(Reason::Malformed, "empty token"));
    }
    let dots = token.bytes().filter(|&b| b == b'.').count();
    if dots == 4 {
        return Err(Rejection::new(
            Reason::EncryptedOrNested,
            "five segments: a JWE (encrypted token) is not accepted",
        ));
    }
    if dots != 2 {
        return Err(Rejection::with(
            Reason::Malformed,
            format!("{} segments; a compact JWS has 3", dots + 1),
        ));
    }
    let (signing_input, signature_b64) = token
        .rsplit_once('.')
        .ok_or(Rejection::new(Reason::Malformed, "no signature segment"))?;
    let (header_b64, payload_b64) = signing_input
        .split_once('.')
        .ok_or(Rejection::new(Reason::Malformed, "no payload segment"))?;
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(Rejection::new(
            Reason::Malformed,
            "empty header or payload segment",
        ));
    }
    let header_json = decode_b64(header_b64, "header")?;
    let header_text = check_json_object(&header_json, "header")?;
    let header: RawHeader<'_> = serde_json::from_str(header_text).map_err(|e| {
        Rejection::with(Reason::Malformed, format!("header is not valid JSON: {e}"))
    })?;
    let alg_name = header
        .alg
        .ok_or(Rejection::new(Reason::Malformed, "header has no `alg`"))?;
    if alg_name.eq_ignore_ascii_case("none") {
        return Err(Rejection::new(
            Reason::AlgorithmNone,
            "`alg: none` (an unsecured token) is never accepted",
        ));
    }
    if header.enc.is_some() || header.zip.is_some() {
        return Err(Rejection::new(
            Reason::EncryptedOrNested,
            "header has `enc`/`zip`: a JWE is not accepted",
        ));
    }
    if header
        .cty
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("JWT"))
    {
        return Err(Rejection::new(
            Reason::EncryptedOrNested,
            "`cty: JWT` marks a nested token, which is not accepted",
        ));
    }
    if let Some(crit) = &header.crit {
        // RFC 7515 §4.1.11: recipients must reject tokens naming critical extensions
        // they do not understand. We understand none (not even `b64`, RFC 7797).
        return Err(Rejection::with(
            Reason::UnsupportedCriticalHeader,
            if crit.is_empty() {
                "`crit` is present but empty".to_owned()
            } else {
                format!("`crit` names {} unsupported extension(s)", crit.len())
            },
        ));
    }
    if header.b64.is_some() {
        return Err(Rejection::new(
            Reason::UnsupportedCriticalHeader,
            "`b64` (unencoded payload) is not supported",
        ));
    }
    let alg = Algorithm::from_name(&alg_name).ok_or_else(|| {
        Rejection::with(
            Reason::AlgorithmNotAllowed,
            format!("algorithm {:?} is not supported", truncate(&alg_name, 16)),
        )
    })?;
    let kid = header.kid.map(Cow::into_owned);
    // Checked only now, so that an unsigned `alg: none` token gets its own reason.
    if signature_b64.is_empty() {
        return Err(Rejection::new(
            Reason::BadSignature,
            "the signature is empty",
        ));
    }

    let mut signature = SignatureBytes {
        buf: [0; MAX_SIGNATURE_LEN],
        len: 0,
    };
    if base64::decoded_len_estimate(signature_b64.len()) > MAX_SIGNATURE_LEN {
        return Err(Rejection::new(
            Reason::BadSignature,
            "the signature is too long",
        ));
    }
    signature.len = URL_SAFE_NO_PAD
        .decode_slice(signature_b64, &mut signature.buf)
        .map_err(|_| Rejection::new(Reason::Malformed, "signature is not base64url"))?;

    Ok(Jws {
        signing_input,
        payload_b64,
        alg,
        kid,
        signature,
    })
}

fn decode_b64(segment: &str, what: &'static str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Rejection::with(Reason::Malformed, format!("{what} is not base64url")))
}

/// The checks a header or payload passes before it is parsed: valid UTF-8 (serde
/// skips unread strings without checking them), an object (serde's derived structs
/// also accept arrays), and nesting within [`MAX_JSON_DEPTH`].
///
/// Returns the text as `&str`: parsing it with `serde_json::from_str` then skips the
/// per-string UTF-8 checks that `from_slice` would repeat.
fn check_json_object<'a>(json: &'a [u8], what: &'static str) -> Result<&'a str, Rejection> {
    let text = utf8_object(json, what)?;
    check_depth(json, what)?;
    Ok(text)
}

/// UTF-8 and "is an object" only; the payload's depth is limited while it is parsed
/// (see [`Skip`]), which saves a second pass over it.
fn utf8_object<'a>(json: &'a [u8], what: &'static str) -> Result<&'a str, Rejection> {
    let Ok(text) = std::str::from_utf8(json) else {
        return Err(Rejection::with(
            Reason::Malformed,
            format!("{what} is not valid UTF-8"),
        ));
    };
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return Err(Rejection::with(
            Reason::Malformed,
            format!("{what} is not a JSON object"),
        ));
    }
    Ok(text)
}

/// Rejects JSON nested deeper than [`MAX_JSON_DEPTH`]. A linear scan that skips
/// string contents; it runs before parsing, so the parser never recurses deeply.
fn check_depth(json: &[u8], what: &'static str) -> Result<(), Rejection> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(Rejection::with(
                        Reason::Malformed,
                        format!("{what} JSON is nested deeper than {MAX_JSON_DEPTH} levels"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Reads only `iss` from an unverified payload, to choose the issuer whose keys
/// verify it. Returns `None` when it cannot (the caller then rejects).
pub fn peek_issuer(payload_b64: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct IssOnly {
        iss: Option<String>,
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
    let text = check_json_object(&bytes, "payload").ok()?;
    serde_json::from_str::<IssOnly>(text).ok()?.iss
}

/// The registered claims of a verified payload, with their types checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisteredClaims {
    /// `iss`.
    pub iss: Option<String>,
    /// `sub`.
    pub sub: Option<String>,
    /// `aud`, a string or an array of strings in the token.
    pub aud: Vec<String>,
    /// `exp`, Unix seconds.
    pub exp: Option<i64>,
    /// `nbf`, Unix seconds.
    pub nbf: Option<i64>,
    /// `iat`, Unix seconds.
    pub iat: Option<i64>,
    /// `jti`.
    pub jti: Option<String>,
    /// `sid` (OIDC session id).
    pub sid: Option<String>,
}

/// Decodes and parses the payload of a token whose signature has been verified.
/// Type errors (`exp` as a string) are [`Reason::InvalidClaim`]; syntax errors,
/// duplicate keys and non-objects are [`Reason::Malformed`].
pub fn parse_claims(payload_b64: &str) -> Result<(RegisteredClaims, Vec<u8>), Rejection> {
    let payload = decode_b64(payload_b64, "payload")?;
    let text = utf8_object(&payload, "payload")?;
    let claims = serde_json::from_str::<ClaimsDoc>(text)
        .map_err(|e| {
            // Data errors are wrong claim types, except the two structural ones
            // our visitors raise themselves.
            let message = e.to_string();
            let reason = if e.classify() == serde_json::error::Category::Data
                && !message.starts_with("duplicate")
                && !message.starts_with("JSON is nested")
            {
                Reason::InvalidClaim
            } else {
                Reason::Malformed
            };
            Rejection::with(reason, format!("payload: {e}"))
        })?
        .0;
    Ok((claims, payload))
}

/// The payload object. A hand-written visitor so that a duplicated member — which
/// different JSON parsers resolve differently — is an error for every key, not only
/// the registered ones, and so that unregistered members are skipped unallocated.
struct ClaimsDoc(RegisteredClaims);

impl<'de> Deserialize<'de> for ClaimsDoc {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ClaimsVisitor)
    }
}

struct ClaimsVisitor;

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = ClaimsDoc;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClaimsDoc, A::Error> {
        let mut c = RegisteredClaims::default();
        // Keys seen so far; small linear set (payloads have a handful of members).
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate member {:?}",
                    truncate(&key, 32)
                )));
            }
            match key.as_ref() {
                "iss" => c.iss = Some(map.next_value::<String>()?),
                "sub" => c.sub = Some(map.next_value::<String>()?),
                "jti" => c.jti = Some(map.next_value::<String>()?),
                "sid" => c.sid = Some(map.next_value::<String>()?),
                "aud" => c.aud = map.next_value::<Audience>()?.0,
                "exp" => c.exp = Some(map.next_value::<NumericDate>()?.0),
                "nbf" => c.nbf = Some(map.next_value::<NumericDate>()?.0),
                "iat" => c.iat = Some(map.next_value::<NumericDate>()?.0),
                _ => map.next_value_seed(Skip(1))?,
            }
            seen.push(key);
        }
        Ok(ClaimsDoc(c))
    }
}

/// Skips an unregistered member's value without allocating, refusing nesting deeper
/// than [`MAX_JSON_DEPTH`] (serde's `IgnoredAny` skips iteratively, without a limit).
struct Skip(usize);

impl<'de> de::DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.deeper()?;
        while seq.next_element_seed(Skip(depth))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.deeper()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Skip(depth))?;
        }
        Ok(())
    }
}

impl Skip {
    fn deeper<E: de::Error>(&self) -> Result<usize, E> {
        if self.0 >= MAX_JSON_DEPTH {
            Err(E::custom(format_args!(
                "JSON is nested deeper than {MAX_JSON_DEPTH} levels"
            )))
        } else {
            Ok(self.0 + 1)
        }
    }
}

/// RFC 7519 NumericDate: a JSON number of seconds, possibly fractional.
struct NumericDate(i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NumericDate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a NumericDate (number of seconds)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
                Ok(NumericDate(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
                i64::try_from(v)
                    .map(NumericDate)
                    .map_err(|_| E::custom("NumericDate out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumericDate, E> {
                // Bounds keep the cast exact; fractions of a second are dropped (floor).
                if v.is_finite() && (-9.0e15..=9.0e15).contains(&v) {
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(NumericDate(v.floor() as i64))
                } else {
                    Err(E::custom("NumericDate out of range"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `aud`: one string or an array of strings.
struct Audience(Vec<String>);

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Audience;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    if out.len() == 64 {
                        return Err(de::Error::custom("more than 64 audiences"));
                    }
                    out.push(s);
                }
                Ok(Audience(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests;
