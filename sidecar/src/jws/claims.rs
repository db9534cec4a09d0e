//! The claims of a token whose signature holds: the whole payload object, and its
//! registered claims with their JSON types checked.

use std::sync::OnceLock;

use denylist_proto::pb::Reason;
use serde_json::{Map, Number, Value};

use super::Rejection;

/// Most `aud` values accepted.
const MAX_AUDIENCES: usize = 64;

/// NumericDates beyond this many seconds either side of 1970 are refused when written
/// as fractions or exponents: up to it the cast from f64 is exact.
const MAX_FRACTIONAL_DATE: f64 = 9.0e15;

/// A verified payload: the object as serde_json read it (see [`super::StrictObject`]),
/// and its registered claims, read once with their types checked, so the accessors
/// cannot fail and cost no map lookup (the Verify path reads them on every call, the
/// cached ones included).
#[derive(Debug, Clone)]
pub struct Claims {
    object: Map<String, Value>,
    /// The registered string claims (`iss`, `sub`, `jti`, `sid`, the `aud` values),
    /// copied back to back into one allocation; the spans below index it.
    text: Box<str>,
    iss: Option<Span>,
    sub: Option<Span>,
    jti: Option<Span>,
    sid: Option<Span>,
    aud: Audiences,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    /// The object as JSON text, made on first use (see [`Claims::payload`]).
    json: OnceLock<Box<[u8]>>,
}

/// Where a claim's text lies in [`Claims::text`].
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

/// The `aud` values' spans: one without a further allocation (the usual case).
#[derive(Debug, Clone)]
enum Audiences {
    One(Span),
    /// None, as an empty slice, or several.
    Many(Box<[Span]>),
}

impl Audiences {
    fn spans(&self) -> &[Span] {
        match self {
            Self::One(span) => std::slice::from_ref(span),
            Self::Many(spans) => spans,
        }
    }
}

/// The registered claims' values in a payload object, found in one pass.
#[derive(Default)]
struct Registered<'a> {
    iss: Option<&'a Value>,
    sub: Option<&'a Value>,
    jti: Option<&'a Value>,
    sid: Option<&'a Value>,
    aud: Option<&'a Value>,
    exp: Option<&'a Value>,
    nbf: Option<&'a Value>,
    iat: Option<&'a Value>,
}

impl<'a> Registered<'a> {
    fn find(object: &'a Map<String, Value>) -> Self {
        let mut r = Self::default();
        for (name, value) in object {
            // Every registered name has three bytes: one compare of arrays each.
            let Ok(name) = <&[u8; 3]>::try_from(name.as_bytes()) else {
                continue;
            };
            let slot = match name {
                b"iss" => &mut r.iss,
                b"sub" => &mut r.sub,
                b"jti" => &mut r.jti,
                b"sid" => &mut r.sid,
                b"aud" => &mut r.aud,
                b"exp" => &mut r.exp,
                b"nbf" => &mut r.nbf,
                b"iat" => &mut r.iat,
                _ => continue,
            };
            *slot = Some(value);
        }
        r
    }
}

impl Claims {
    /// Checks the registered claims' types: `iss`, `sub`, `jti`, `sid` strings; `aud` a
    /// string or an array of at most 64 strings; `exp`, `nbf`, `iat` NumericDates
    /// (integers within i64; fractions and exponents floored, within ±9e15). A claim of
    /// another type (`null` included) is [`Reason::InvalidClaim`]; absent claims are
    /// left to the caller's policy.
    pub fn new(object: Map<String, Value>) -> Result<Self, Rejection> {
        let r = Registered::find(&object);
        let (iss, sub) = (string("iss", r.iss)?, string("sub", r.sub)?);
        let (jti, sid) = (string("jti", r.jti)?, string("sid", r.sid)?);
        let wrong_aud = || invalid("aud", "must be a string or an array of strings");
        let aud: &[Value] = match r.aud {
            None => &[],
            Some(one @ Value::String(_)) => std::slice::from_ref(one),
            Some(Value::Array(values)) if values.len() > MAX_AUDIENCES => {
                return Err(invalid("aud", "has more than 64 values"));
            }
            Some(Value::Array(values)) if values.iter().all(Value::is_string) => values,
            Some(_) => return Err(wrong_aud()),
        };
        let (exp, nbf, iat) = (
            date("exp", r.exp)?,
            date("nbf", r.nbf)?,
            date("iat", r.iat)?,
        );

        let strings = [iss, sub, jti, sid];
        let aud = aud.iter().map(|v| v.as_str().unwrap_or_default());
        let len = strings.iter().flatten().map(|s| s.len()).sum::<usize>()
            + aud.clone().map(str::len).sum::<usize>();
        let mut text = String::with_capacity(len);
        let mut keep = |s: &str| {
            let start = text.len();
            text.push_str(s);
            Span {
                start,
                end: text.len(),
            }
        };
        let [iss, sub, jti, sid] = strings.map(|s| s.map(&mut keep));
        let mut spans = aud.map(&mut keep);
        let aud = match (spans.next(), spans.len()) {
            (Some(one), 0) => Audiences::One(one),
            (first, _) => Audiences::Many(first.into_iter().chain(spans).collect()),
        };
        Ok(Self {
            text: text.into_boxed_str(),
            iss,
            sub,
            jti,
            sid,
            aud,
            exp,
            nbf,
            iat,
            object,
            json: OnceLock::new(),
        })
    }

    /// The whole payload object.
    pub fn object(&self) -> &Map<String, Value> {
        &self.object
    }

    /// The payload object as JSON text, serialised from [`Claims::object`] on first use
    /// (the same members and values as the token's payload; spacing and member order
    /// may differ).
    pub fn payload(&self) -> &[u8] {
        self.json.get_or_init(|| {
            // Serialising a `Map` of `Value`s cannot fail: its keys are strings.
            serde_json::to_vec(&self.object)
                .unwrap_or_default()
                .into_boxed_slice()
        })
    }

    /// `iss`.
    pub fn iss(&self) -> Option<&str> {
        self.get(self.iss)
    }

    /// `sub`.
    pub fn sub(&self) -> Option<&str> {
        self.get(self.sub)
    }

    /// `jti`.
    pub fn jti(&self) -> Option<&str> {
        self.get(self.jti)
    }

    /// `sid` (OIDC session id).
    pub fn sid(&self) -> Option<&str> {
        self.get(self.sid)
    }

    /// `aud`: a string or an array of strings in the token, in order; empty when absent.
    pub fn audiences(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.aud.spans().iter().map(|s| &self.text[s.start..s.end])
    }

    /// `exp`, Unix seconds.
    pub fn exp(&self) -> Option<i64> {
        self.exp
    }

    /// `nbf`, Unix seconds.
    pub fn nbf(&self) -> Option<i64> {
        self.nbf
    }

    /// `iat`, Unix seconds.
    pub fn iat(&self) -> Option<i64> {
        self.iat
    }

    fn get(&self, span: Option<Span>) -> Option<&str> {
        span.map(|s| &self.text[s.start..s.end])
    }
}

/// A string claim, if present.
fn string<'a>(name: &str, value: Option<&'a Value>) -> Result<Option<&'a str>, Rejection> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(name, "must be a string")),
    }
}

/// A NumericDate claim, if present.
fn date(name: &str, value: Option<&Value>) -> Result<Option<i64>, Rejection> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => numeric_date(n)
            .map(Some)
            .ok_or_else(|| invalid(name, "out of range")),
        Some(_) => Err(invalid(name, "must be a NumericDate (a number of seconds)")),
    }
}

/// RFC 7519 NumericDate seconds: integers exactly (within i64), fractions and
/// exponents floored when within ±9e15.
fn numeric_date(n: &Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    if n.is_u64() {
        return None; // an integer beyond i64::MAX
    }
    let v = n.as_f64()?;
    #[allow(clippy::cast_possible_truncation)] // exact within the bound
    (v.is_finite() && (-MAX_FRACTIONAL_DATE..=MAX_FRACTIONAL_DATE).contains(&v))
        .then(|| v.floor() as i64)
}

fn invalid(name: &str, why: &str) -> Rejection {
    Rejection::with(Reason::InvalidClaim, format!("payload: `{name}` {why}"))
}
