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

use denylist_proto::pb::Reason;

use crate::algorithm::Algorithm;

mod b64;
mod json;

use json::{Fault, JsonStr, Names, Scanner};

/// Headers up to this many decoded bytes are decoded on the stack (typical ones are
/// under 100); longer ones go to the heap.
const HEADER_STACK_BYTES: usize = 256;

/// Longest decoded header accepted: what fits in an 8 KiB token (the default
/// `verify.max_token_bytes`) with room to spare. Keys never come from the header, so
/// nothing legitimate needs more.
const MAX_HEADER_BYTES: usize = 8192;

/// Longest signature accepted: that of the largest RSA key the key store loads
/// (RSA-8192, 1024 bytes), so that no key loads whose tokens could never verify.
const MAX_SIGNATURE_LEN: usize = crate::keys::MAX_RSA_BITS / 8;

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
    /// The header's `kid`, if any: borrowed from the caller's [`HeaderBuf`] unless it
    /// had escapes or the header was too long for the buffer.
    pub kid: Option<Cow<'t, str>>,
    signature: SignatureBytes,
}

/// Room for a decoded protected header on the caller's stack. [`parse`] decodes the
/// header into it (typical ones are under 100 bytes), so that the parsed token can
/// borrow its `kid` instead of allocating it.
#[derive(Debug)]
pub struct HeaderBuf([u8; HEADER_STACK_BYTES]);

impl HeaderBuf {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self([0; HEADER_STACK_BYTES])
    }
}

impl Default for HeaderBuf {
    fn default() -> Self {
        Self::new()
    }
}

/// Longest signature kept inline: HMAC tags (up to 64 bytes), ECDSA (64, 96), EdDSA
/// (64) and RSA-2048 (256), the usual RSA size; longer RSA signatures go to the heap.
const INLINE_SIGNATURE_LEN: usize = 256;

/// A decoded signature: inline up to RSA-2048, so that no allocation is made (an
/// allocation and its free measured ~0.1 µs of RS256's overhead, more than moving the
/// 264 bytes); on the heap when longer (RSA-3072 and up, whose check costs a thousand
/// times the allocation).
#[allow(clippy::large_enum_variant)] // The large variant is the common one, on purpose.
enum SignatureBytes {
    Inline {
        buf: [u8; INLINE_SIGNATURE_LEN],
        len: usize,
    },
    Heap(Box<[u8]>),
}

impl SignatureBytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { buf, len } => &buf[..*len],
            Self::Heap(bytes) => bytes,
        }
    }
}

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureBytes({} bytes)", self.as_slice().len())
    }
}

impl Jws<'_> {
    /// The decoded signature.
    pub fn signature(&self) -> &[u8] {
        self.signature.as_slice()
    }
}

/// Splits a compact JWS, parses its header (decoded into `header_buf` when it fits)
/// and decodes its signature.
pub fn parse<'t>(
    token: &'t str,
    max_len: usize,
    header_buf: &'t mut HeaderBuf,
) -> Result<Jws<'t>, Rejection> {
    if token.len() > max_len {
        return Err(Rejection::with(
            Reason::TokenTooLarge,
            format!("token is {} bytes; the limit is {max_len}", token.len()),
        ));
    }
    if token.is_empty() {
        return Err(Rejection::new(Reason::Malformed, "empty token"));
    }
    let (signing_input, header_b64, payload_b64, signature_b64) = match segments(token) {
        Some(parts) => parts,
        None => {
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
        }
    };
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(Rejection::new(
            Reason::Malformed,
            "empty header or payload segment",
        ));
    }
    let (alg, kid) = match decoded_len(header_b64, "header")? {
        n if n <= HEADER_STACK_BYTES => match recent::find(header_b64, header_buf) {
            Some((alg, None)) => (alg, None),
            Some((alg, Some(kid_len))) => {
                let kid = utf8(&header_buf.0[..kid_len], "header")?;
                (alg, Some(Cow::Borrowed(kid)))
            }
            None => {
                let json = decode_into(header_b64, &mut header_buf.0[..n], "header")?;
                let (alg, kid) = read_protected_header(json)?;
                recent::remember(header_b64, alg, kid.as_deref());
                (alg, kid)
            }
        },
        n if n <= MAX_HEADER_BYTES => {
            let heap = decode_b64(header_b64, "header")?;
            let (alg, kid) = read_protected_header(&heap)?;
            (alg, kid.map(|k| Cow::Owned(k.into_owned())))
        }
        n => {
            return Err(Rejection::with(
                Reason::Malformed,
                format!("header is {n} bytes; the limit is {MAX_HEADER_BYTES}"),
            ));
        }
    };
    // Checked only now, so that an unsigned `alg: none` token gets its own reason.
    if signature_b64.is_empty() {
        return Err(Rejection::new(
            Reason::BadSignature,
            "the signature is empty",
        ));
    }

    // Too long is told before a malformed length. The exact decoded length where
    // there is one: the rounded-up estimate used before refused RSA-4096's 512 bytes.
    let longest = b64::decoded_len(signature_b64.len())
        .unwrap_or_else(|| signature_b64.len().div_ceil(4) * 3);
    if longest > MAX_SIGNATURE_LEN {
        return Err(Rejection::new(
            Reason::BadSignature,
            "the signature is too long",
        ));
    }
    let len = decoded_len(signature_b64, "signature")?;
    let signature = if len <= INLINE_SIGNATURE_LEN {
        let mut buf = [0; INLINE_SIGNATURE_LEN];
        decode_into(signature_b64, &mut buf[..len], "signature")?;
        SignatureBytes::Inline { buf, len }
    } else {
        SignatureBytes::Heap(decode_b64(signature_b64, "signature")?.into_boxed_slice())
    };
    Ok(Jws {
        signing_input,
        payload_b64,
        alg,
        kid,
        signature,
    })
}

/// Protected headers this thread parsed lately, by their base64url text.
///
/// Tokens of one issuer and key share one header (`alg`, `typ`, `kid`), so most calls
/// find theirs here and skip decoding and scanning it: about a third of Verify's own
/// work besides the claims (see `docs/BENCHMARKS.md`). One small table per thread: no
/// lock, no cache line shared between cores. Only headers that parsed are kept, keyed
/// by their exact text, and parsing is a pure function of that text, so a hit answers
/// exactly what a parse would; a header not found is parsed in full, so a stream of
/// distinct headers only makes calls take the full path, as without the table.
mod recent {
    use std::cell::RefCell;

    use super::{HEADER_STACK_BYTES, HeaderBuf};
    use crate::algorithm::Algorithm;

    /// Headers kept per thread: enough for a few issuers or a key rotation.
    const SLOTS: usize = 4;

    struct Header {
        b64: Box<str>,
        alg: Algorithm,
        kid: Option<Box<str>>,
    }

    struct Table {
        slots: [Option<Header>; SLOTS],
        /// The slot the next new header replaces (round robin).
        next: usize,
    }

    thread_local! {
        static TABLE: RefCell<Table> = const {
            RefCell::new(Table {
                slots: [const { None }; SLOTS],
                next: 0,
            })
        };
    }

    /// The algorithm of a header parsed before, and the length of its `kid`, which is
    /// copied to the start of `buf` (it fits: the header it came from did).
    pub(super) fn find(b64: &str, buf: &mut HeaderBuf) -> Option<(Algorithm, Option<usize>)> {
        TABLE.with_borrow(|table| {
            let hit = table.slots.iter().flatten().find(|h| *h.b64 == *b64)?;
            let kid_len = hit.kid.as_deref().map(|kid| {
                buf.0[..kid.len()].copy_from_slice(kid.as_bytes());
                kid.len()
            });
            Some((hit.alg, kid_len))
        })
    }

    /// Whether this thread holds `b64`.
    #[cfg(test)]
    pub(super) fn holds(b64: &str) -> bool {
        TABLE.with_borrow(|table| table.slots.iter().flatten().any(|h| *h.b64 == *b64))
    }

    /// Keeps a header that parsed; only those short enough for a [`HeaderBuf`].
    pub(super) fn remember(b64: &str, alg: Algorithm, kid: Option<&str>) {
        if b64.len() > HEADER_STACK_BYTES / 3 * 4 {
            return;
        }
        TABLE.with_borrow_mut(|table| {
            let slot = table.next;
            table.next = (slot + 1) % SLOTS;
            table.slots[slot] = Some(Header {
                b64: b64.into(),
                alg,
                kid: kid.map(Into::into),
            });
        });
    }
}

/// Reads a decoded protected header and refuses what the sidecar does not accept:
/// `alg: none`, a JWE or nested token, critical extensions, an unknown algorithm.
/// Returns the algorithm and the `kid`.
fn read_protected_header(json: &[u8]) -> Result<(Algorithm, Option<Cow<'_, str>>), Rejection> {
    let header = read_header(utf8(json, "header")?)?;
    let alg_name = header
        .alg
        .ok_or(Rejection::new(Reason::Malformed, "header has no `alg`"))?;
    if alg_name.eq_ignore_ascii_case("none") {
        return Err(Rejection::new(
            Reason::AlgorithmNone,
            "`alg: none` (an unsecured token) is never accepted",
        ));
    }
    if header.enc_or_zip {
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
    if let Some(crit) = header.crit {
        // RFC 7515 §4.1.11: recipients must reject tokens naming critical extensions
        // they do not understand. We understand none (not even `b64`, RFC 7797).
        return Err(Rejection::with(
            Reason::UnsupportedCriticalHeader,
            if crit == 0 {
                "`crit` is present but empty".to_owned()
            } else {
                format!("`crit` names {crit} unsupported extension(s)")
            },
        ));
    }
    if header.b64 {
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
    Ok((alg, header.kid))
}

/// `header.payload` (the signing input), the header, the payload and the signature
/// segments of a token with exactly two dots.
fn segments(token: &str) -> Option<(&str, &str, &str, &str)> {
    // The memchr crate's search is vectorised; `str::find` reads a word at a time.
    let dot = |s: &str| memchr::memchr(b'.', s.as_bytes());
    let first = dot(token)?;
    let second = first + 1 + dot(&token[first + 1..])?;
    let signature = &token[second + 1..];
    if dot(signature).is_some() {
        return None;
    }
    Some((
        &token[..second],
        &token[..first],
        &token[first + 1..second],
        signature,
    ))
}

/// The exact decoded length of an unpadded base64url segment; a length that no
/// encoding has (4k + 1) is refused here.
fn decoded_len(segment: &str, what: &'static str) -> Result<usize, Rejection> {
    b64::decoded_len(segment.len()).ok_or_else(|| not_base64url(what))
}

fn not_base64url(what: &'static str) -> Rejection {
    Rejection::with(Reason::Malformed, format!("{what} is not base64url"))
}

/// Decodes `segment` into `out`, which has exactly its [`decoded_len`].
fn decode_into<'o>(
    segment: &str,
    out: &'o mut [u8],
    what: &'static str,
) -> Result<&'o [u8], Rejection> {
    b64::decode(segment.as_bytes(), out).ok_or_else(|| not_base64url(what))?;
    Ok(out)
}

/// Decodes `segment` into a vector of exactly its decoded length, so that turning
/// it into a boxed slice later does not reallocate.
fn decode_b64(segment: &str, what: &'static str) -> Result<Vec<u8>, Rejection> {
    let len = decoded_len(segment, what)?;
    // Not `vec![0; len]`: that is calloc, which in glibc skips the thread cache and
    // costs more than the whole decode.
    #[allow(clippy::slow_vector_initialization)]
    let mut out = Vec::with_capacity(len);
    out.resize(len, 0);
    decode_into(segment, &mut out, what)?;
    Ok(out)
}

fn utf8<'a>(json: &'a [u8], what: &'static str) -> Result<&'a str, Rejection> {
    std::str::from_utf8(json).map_err(|_| not_utf8(what))
}

fn not_utf8(what: &'static str) -> Rejection {
    Rejection::with(Reason::Malformed, format!("{what} is not valid UTF-8"))
}

/// A scanner fault as a rejection: always [`Reason::Malformed`].
fn malformed(what: &'static str) -> impl Fn(Fault) -> Rejection {
    move |fault| {
        if fault.what == json::NOT_OBJECT {
            Rejection::with(Reason::Malformed, format!("{what} is not a JSON object"))
        } else {
            Rejection::with(
                Reason::Malformed,
                format!("{what} is not valid JSON: {fault}"),
            )
        }
    }
}

/// A duplicated member: [`Reason::Malformed`], naming it (truncated; it comes from
/// the token).
fn duplicate(what: &'static str, at: usize, name: &str) -> Rejection {
    Rejection::with(
        Reason::Malformed,
        format!(
            "{what} is not valid JSON: duplicate member {:?} at byte {at}",
            truncate(name, 32)
        ),
    )
}

/// Sets `bit` in `seen`; whether it was clear before.
fn first_time(seen: &mut u8, bit: u8) -> bool {
    let fresh = *seen & bit == 0;
    *seen |= bit;
    fresh
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The protected header members we read. `jku`, `x5u`, `jwk` and `x5c` are
/// deliberately not read: keys only ever come from configuration, never from the
/// token that is being checked.
#[derive(Debug, Default)]
struct Header<'h> {
    alg: Option<Cow<'h, str>>,
    kid: Option<Cow<'h, str>>,
    cty: Option<Cow<'h, str>>,
    /// `enc` or `zip` is present (whatever its value): a JWE.
    enc_or_zip: bool,
    /// `crit` is present, with this many elements.
    crit: Option<usize>,
    /// `b64` is present (whatever its value).
    b64: bool,
}

/// Header members with a meaning here, as bits of a seen-set.
#[derive(Clone, Copy)]
enum HeaderMember {
    Alg,
    Kid,
    Cty,
    Enc,
    Zip,
    Crit,
    B64,
}

impl HeaderMember {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "alg" => Self::Alg,
            "kid" => Self::Kid,
            "cty" => Self::Cty,
            "enc" => Self::Enc,
            "zip" => Self::Zip,
            "crit" => Self::Crit,
            "b64" => Self::B64,
            _ => return None,
        })
    }
}

/// Parses the header JSON. Every fault here, wrong member types included, is
/// [`Reason::Malformed`]; the caller then checks what the members say.
fn read_header(text: &str) -> Result<Header<'_>, Rejection> {
    let fault = malformed("header");
    let mut sc = Scanner::new(text);
    let mut h = Header::default();
    let mut seen = 0u8;
    let mut others = Names::new();
    let wrong_type = |name: &str| {
        Rejection::with(
            Reason::Malformed,
            format!("header `{name}` must be a string"),
        )
    };
    sc.open_object().map_err(&fault)?;
    let mut first = true;
    while let Some(raw) = sc.next_member(&mut first) {
        let name = sc.last_string(raw).decoded();
        let member = HeaderMember::from_name(&name);
        let fresh = match member {
            Some(m) => first_time(&mut seen, 1 << m as u8),
            None => others.insert(name.clone()),
        };
        if !fresh {
            return Err(duplicate("header", sc.pos(), &name));
        }
        match member {
            Some(m @ (HeaderMember::Alg | HeaderMember::Kid | HeaderMember::Cty)) => {
                let Some(value) = sc.string_or_skip(1) else {
                    return Err(sc.fault().map_or_else(|| wrong_type(&name), &fault));
                };
                let value = Some(sc.last_string(value).decoded());
                match m {
                    HeaderMember::Alg => h.alg = value,
                    HeaderMember::Kid => h.kid = value,
                    _ => h.cty = value,
                }
            }
            Some(HeaderMember::Enc | HeaderMember::Zip) => {
                h.enc_or_zip = true;
                sc.skip(1);
            }
            Some(HeaderMember::B64) => {
                h.b64 = true;
                sc.skip(1);
            }
            Some(HeaderMember::Crit) => {
                if !sc.open_array() {
                    return Err(Rejection::new(
                        Reason::Malformed,
                        "header `crit` must be an array",
                    ));
                }
                let (mut count, mut first) = (0, true);
                while sc.fault().is_none() && sc.next_element(&mut first) {
                    sc.skip(2);
                    count += 1;
                }
                h.crit = Some(count);
            }
            None => sc.skip(1),
        }
        if sc.fault().is_some() {
            break;
        }
    }
    sc.finish().map_err(&fault)?;
    Ok(h)
}

/// Reads only `iss` from an unverified payload, to choose the issuer whose keys
/// verify it. Returns `None` when it cannot (the caller then rejects). The whole
/// payload must still be strict JSON, without duplicate members.
pub fn peek_issuer(payload_b64: &str) -> Option<String> {
    let payload = decode_b64(payload_b64, "payload").ok()?;
    let json = utf8(&payload, "payload").ok()?;
    let (found, escaped) = read_claims(json, Want::IssOnly).ok()?;
    let iss = found.iss?;
    // An `iss` with escapes was decoded into `escaped`, whose spans start past the JSON.
    Some(match iss.start.checked_sub(json.len()) {
        Some(at) => escaped[at..at + iss.len()].to_owned(),
        None => json[iss.start..iss.end].to_owned(),
    })
}

/// A verified payload: its JSON and the registered claims read from it, with their
/// types checked, in one allocation. A claim string without escapes is a range of the
/// JSON; the rare one with escapes is decoded once and kept after it.
#[derive(Debug, Clone)]
pub struct Claims {
    /// The payload JSON, then the decoded text of claim strings that had escapes.
    text: Box<str>,
    json_len: usize,
    found: Found,
}

impl Claims {
    /// The decoded payload JSON (for callers that want every claim).
    pub fn payload(&self) -> &[u8] {
        self.text[..self.json_len].as_bytes()
    }

    /// `iss`.
    pub fn iss(&self) -> Option<&str> {
        self.get(self.found.iss)
    }

    /// `sub`.
    pub fn sub(&self) -> Option<&str> {
        self.get(self.found.sub)
    }

    /// `jti`.
    pub fn jti(&self) -> Option<&str> {
        self.get(self.found.jti)
    }

    /// `sid` (OIDC session id).
    pub fn sid(&self) -> Option<&str> {
        self.get(self.found.sid)
    }

    /// `aud`: a string or an array of strings in the token, in order; empty when absent.
    pub fn audiences(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.found
            .aud
            .spans()
            .iter()
            .map(|s| &self.text[s.start..s.end])
    }

    /// `exp`, Unix seconds.
    pub fn exp(&self) -> Option<i64> {
        self.found.exp
    }

    /// `nbf`, Unix seconds.
    pub fn nbf(&self) -> Option<i64> {
        self.found.nbf
    }

    /// `iat`, Unix seconds.
    pub fn iat(&self) -> Option<i64> {
        self.found.iat
    }

    fn get(&self, span: Option<Span>) -> Option<&str> {
        span.map(|s| &self.text[s.start..s.end])
    }
}

/// Where a claim string's decoded text lies in [`Claims`]' buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn len(self) -> usize {
        self.end - self.start
    }
}

/// The registered claims of a payload, as spans (see [`Kept`]).
#[derive(Debug, Clone, Default)]
struct Found {
    iss: Option<Span>,
    sub: Option<Span>,
    jti: Option<Span>,
    sid: Option<Span>,
    aud: Audiences,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
}

/// `aud` values: one without allocating (the usual case), more in a vector.
#[derive(Debug, Clone)]
enum Audiences {
    One(Span),
    /// Also none, as an empty vector (which does not allocate).
    Many(Vec<Span>),
}

impl Default for Audiences {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl Audiences {
    fn spans(&self) -> &[Span] {
        match self {
            Self::One(span) => std::slice::from_ref(span),
            Self::Many(spans) => spans,
        }
    }

    fn push(&mut self, span: Span) {
        *self = match std::mem::take(self) {
            Self::Many(spans) if spans.is_empty() => Self::One(span),
            Self::One(first) => Self::Many(vec![first, span]),
            Self::Many(mut spans) => {
                spans.push(span);
                Self::Many(spans)
            }
        };
    }
}

/// Most `aud` values accepted.
const MAX_AUDIENCES: usize = 64;

/// Decodes and parses the payload of a token whose signature has been verified.
/// Type errors (`exp` as a string) are [`Reason::InvalidClaim`]; syntax errors,
/// duplicate members, nesting deeper than 32 levels and non-objects are
/// [`Reason::Malformed`] (and win over a type error anywhere in the same payload).
pub fn parse_claims(payload_b64: &str) -> Result<Claims, Rejection> {
    let payload = decode_b64(payload_b64, "payload")?;
    let mut text = String::from_utf8(payload).map_err(|_| not_utf8("payload"))?;
    let (found, escaped) = read_claims(&text, Want::All)?;
    let json_len = text.len();
    if !escaped.is_empty() {
        // Exactly: so that `into_boxed_str` does not reallocate.
        text.reserve_exact(escaped.len());
        text.push_str(&escaped);
    }
    Ok(Claims {
        text: text.into_boxed_str(),
        json_len,
        found,
    })
}

/// Which registered claims [`read_claims`] keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    All,
    IssOnly,
}

/// Registered claims, as bits of a seen-set.
#[derive(Clone, Copy)]
enum Claim {
    Iss,
    Sub,
    Jti,
    Sid,
    Aud,
    Exp,
    Nbf,
    Iat,
}

impl Claim {
    fn from_name(name: &str) -> Option<Self> {
        // Every registered name has three bytes: matched as one array, which compiles
        // to integer compares rather than a string comparison per name.
        let name: &[u8; 3] = name.as_bytes().try_into().ok()?;
        Some(match name {
            b"iss" => Self::Iss,
            b"sub" => Self::Sub,
            b"jti" => Self::Jti,
            b"sid" => Self::Sid,
            b"aud" => Self::Aud,
            b"exp" => Self::Exp,
            b"nbf" => Self::Nbf,
            b"iat" => Self::Iat,
            _ => return None,
        })
    }
}

/// Claim strings kept as [`Span`]s of `json` rather than copied. A string with escapes
/// is decoded into `escaped`, and its span counts from the end of `json`, so that the
/// spans index `json` followed by `escaped`.
struct Kept<'a> {
    json: &'a str,
    escaped: String,
}

impl<'a> Kept<'a> {
    fn span(&mut self, s: JsonStr<'a>) -> Span {
        match s.decoded() {
            Cow::Borrowed(raw) => {
                // `raw` is a slice of `json` (the scanner's input), so the pointer
                // difference is its offset.
                let start = raw.as_ptr() as usize - self.json.as_ptr() as usize;
                Span {
                    start,
                    end: start + raw.len(),
                }
            }
            Cow::Owned(decoded) => {
                let start = self.json.len() + self.escaped.len();
                self.escaped.push_str(&decoded);
                Span {
                    start,
                    end: start + decoded.len(),
                }
            }
        }
    }
}

/// Scans a payload object, keeping the registered claims `want` names; returns them
/// with the decoded text of those that had escapes (see [`Kept`]). A claim of the
/// wrong type is remembered and reported only once the whole payload has scanned
/// cleanly, so a syntax fault anywhere is always [`Reason::Malformed`].
fn read_claims(json: &str, want: Want) -> Result<(Found, String), Rejection> {
    let fault = malformed("payload");
    let mut sc = Scanner::new(json);
    let mut c = Found::default();
    let mut kept = Kept {
        json,
        escaped: String::new(),
    };
    let mut invalid: Option<Rejection> = None;
    let mut seen = 0u8;
    let mut others = Names::new();
    sc.open_object().map_err(&fault)?;
    let mut first = true;
    while let Some(raw) = sc.next_member(&mut first) {
        let name = sc.last_string(raw).decoded();
        let claim = Claim::from_name(&name);
        let fresh = match claim {
            Some(m) => first_time(&mut seen, 1 << m as u8),
            None => others.insert(name.clone()),
        };
        if !fresh {
            return Err(duplicate("payload", sc.pos(), &name));
        }
        let claim = match claim {
            Some(Claim::Iss) => claim,
            Some(_) if want == Want::All => claim,
            _ => None,
        };
        let problem = match claim {
            None => {
                sc.skip(1);
                None
            }
            Some(m @ (Claim::Iss | Claim::Sub | Claim::Jti | Claim::Sid)) => {
                match sc.string_or_skip(1) {
                    Some(s) => {
                        let slot = match m {
                            Claim::Iss => &mut c.iss,
                            Claim::Sub => &mut c.sub,
                            Claim::Jti => &mut c.jti,
                            _ => &mut c.sid,
                        };
                        *slot = Some(kept.span(sc.last_string(s)));
                        None
                    }
                    None => Some("must be a string"),
                }
            }
            Some(m @ (Claim::Exp | Claim::Nbf | Claim::Iat)) => match sc.number_or_skip(1) {
                Some(n) => match n.numeric_date() {
                    Ok(secs) => {
                        let slot = match m {
                            Claim::Exp => &mut c.exp,
                            Claim::Nbf => &mut c.nbf,
                            _ => &mut c.iat,
                        };
                        *slot = Some(secs);
                        None
                    }
                    Err(why) => Some(why),
                },
                None => Some("must be a NumericDate (a number of seconds)"),
            },
            Some(Claim::Aud) => read_audience(&mut sc, &mut kept, &mut c.aud),
        };
        // A fault ends the scan; it wins over a wrong type (reported by `finish`).
        if sc.fault().is_some() {
            break;
        }
        if let (Some(why), None) = (problem, &invalid) {
            invalid = Some(Rejection::with(
                Reason::InvalidClaim,
                format!("payload: `{}` {why}", truncate(&name, 8)),
            ));
        }
    }
    sc.finish().map_err(&fault)?;
    match invalid {
        Some(rejection) => Err(rejection),
        None => Ok((c, kept.escaped)),
    }
}

/// `aud`: one string, or an array of at most [`MAX_AUDIENCES`] strings. Returns what
/// is wrong with its type, if anything; the value is scanned to its end regardless
/// (a fault stays in the scanner).
fn read_audience<'a>(
    sc: &mut Scanner<'a>,
    kept: &mut Kept<'a>,
    out: &mut Audiences,
) -> Option<&'static str> {
    const WRONG: &str = "must be a string or an array of strings";
    if !sc.open_array() {
        return match sc.string_or_skip(1) {
            Some(s) => {
                *out = Audiences::One(kept.span(sc.last_string(s)));
                None
            }
            None => Some(WRONG),
        };
    }
    let (mut problem, mut first) = (None, true);
    while sc.fault().is_none() && sc.next_element(&mut first) {
        match sc.string_or_skip(2) {
            Some(_) if out.spans().len() == MAX_AUDIENCES => {
                problem = problem.or(Some("has more than 64 values"));
            }
            Some(s) => out.push(kept.span(sc.last_string(s))),
            None => problem = problem.or(Some(WRONG)),
        }
    }
    problem
}

#[cfg(test)]
mod tests;
