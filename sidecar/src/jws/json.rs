//! A strict, single-pass JSON scanner for the protected header and the payload.
//!
//! serde_json spent most of `parse_claims` visiting maps and needed a separate pass
//! for the depth limit; this scanner checks RFC 8259 syntax, nesting and string
//! escapes in the one pass that also reads the few members the caller wants. Strings
//! without escapes are borrowed from the input, and values the caller does not read
//! are skipped without allocating.
//!
//! The input is a `&str`, so UTF-8 has been checked before a byte is scanned (one
//! `str::from_utf8`, which is faster than checking string by string). It is stricter
//! than serde_json in three ways only: nesting is limited to [`MAX_DEPTH`], escaped
//! lone UTF-16 surrogates are refused everywhere (serde_json refuses them only in the
//! strings it decodes), and the caller refuses duplicate member names with [`Names`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// Deepest nesting accepted, counting the outermost object as level 1. Real tokens
/// nest two or three levels; deep nesting only serves to exhaust a downstream
/// parser's stack.
pub(super) const MAX_DEPTH: usize = 32;

/// Why the JSON was refused, and the byte offset (in the decoded JSON) where. Small
/// and `Copy`, so that the scanner's results stay cheap to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fault {
    /// Byte offset of the fault in the decoded header or payload.
    pub(super) at: usize,
    /// What was wrong, briefly.
    pub(super) what: &'static str,
}

/// [`Fault::what`] when the top level is not an object.
pub(super) const NOT_OBJECT: &str = "not a JSON object";

/// [`Fault::what`] for nesting deeper than [`MAX_DEPTH`].
const TOO_DEEP: &str = "nested deeper than 32 levels";
const _: () = assert!(MAX_DEPTH == 32, "TOO_DEEP names the limit");

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// A string as it appears between its quotes. Escapes have been checked; decoding is
/// left until the string is wanted, and is free when it has none.
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonStr<'a> {
    raw: &'a str,
    escaped: bool,
}

impl<'a> JsonStr<'a> {
    /// The decoded text: borrowed unless the string has escapes.
    #[inline]
    pub(super) fn decoded(self) -> Cow<'a, str> {
        if self.escaped {
            Cow::Owned(unescape(self.raw))
        } else {
            Cow::Borrowed(self.raw)
        }
    }
}

/// A number, already checked against the JSON grammar and f64's range.
#[derive(Debug, Clone, Copy)]
pub(super) struct Number<'a> {
    text: &'a str,
    /// The value of an integer of at most 18 digits, computed while scanning.
    small: Option<i64>,
    integer: bool,
}

/// Why a number is not a NumericDate.
pub(super) const NUMERIC_DATE_RANGE: &str = "out of range";

impl Number<'_> {
    /// RFC 7519 NumericDate seconds: integers exactly (within i64), fractions and
    /// exponents floored when finite and within ±9e15 (where the cast is exact).
    pub(super) fn numeric_date(self) -> Result<i64, &'static str> {
        if let Some(v) = self.small {
            return Ok(v);
        }
        if self.integer {
            return self.text.parse::<i64>().map_err(|_| NUMERIC_DATE_RANGE);
        }
        match self.text.parse::<f64>() {
            Ok(v) if v.is_finite() && (-9.0e15..=9.0e15).contains(&v) =>
            {
                #[allow(clippy::cast_possible_truncation)]
                Ok(v.floor() as i64)
            }
            _ => Err(NUMERIC_DATE_RANGE),
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// How far from `from` the first byte that ends the plain run of a string is: a
/// quote, a backslash or a control character (which JSON forbids raw in strings).
/// `None` if there is none before the end.
///
/// Eight bytes at a time, with the classic SWAR test: `(x - n·0x01…) & !x & 0x80…`
/// has the high bit of a byte set when that byte of `x` is below `n` (n ≤ 0x80), and
/// XOR turns "equal to c" into "below 1". A borrow can only carry a false flag into
/// the bytes after a true one, so the lowest flag is exact.
#[inline(always)]
fn first_string_special(b: &[u8], from: usize) -> Option<usize> {
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGHS;
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let flags = below(word, 0x20)
            | below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1);
        if flags != 0 {
            return Some(i - from + (flags.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    // Fewer than eight bytes remain.
    let tail = b.get(i..)?;
    let n = tail
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    Some(i - from + n)
}

/// Returned by the scanner's internal steps when they stop at a fault, which the
/// scanner keeps (see [`Scanner::fault`]). A zero-sized error keeps the hot results —
/// `Result<&str, Stop>`, `Option<&str>` — in registers; a `Result` carrying the fault
/// itself went through memory and stalled on store forwarding.
#[derive(Debug, Clone, Copy)]
struct Stop;

/// A cursor over JSON text. Each method documents where it expects the cursor and
/// where it leaves it; all of them skip leading whitespace themselves.
///
/// The first fault stops the scan and is kept: the methods that return `Option` or
/// `bool` then return `None` or `false`, and [`Scanner::fault`] says why.
#[derive(Debug)]
pub(super) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    /// Whether the last string scanned had escapes.
    escaped: bool,
    fault: Option<Fault>,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `text`.
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            escaped: false,
            fault: None,
        }
    }

    /// The byte offset of the cursor.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// The fault the scan stopped at, if it did.
    pub(super) fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// `raw`, the last string scanned, with whether it had escapes.
    pub(super) fn last_string(&self, raw: &'a str) -> JsonStr<'a> {
        JsonStr {
            raw,
            escaped: self.escaped,
        }
    }

    #[cold]
    fn fail_at<T>(&mut self, at: usize, what: &'static str) -> Result<T, Stop> {
        self.fault.get_or_insert(Fault { at, what });
        Err(Stop)
    }

    fn fail<T>(&mut self, what: &'static str) -> Result<T, Stop> {
        self.fail_at(self.pos, what)
    }

    /// Skips whitespace; returns the byte at the cursor, or 0 at the end. (A NUL is
    /// never valid JSON outside a string, so it fails like the end does.)
    #[inline(always)]
    fn non_ws(&mut self) -> u8 {
        let b = self.text.as_bytes();
        loop {
            match b.get(self.pos) {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(&c) => return c,
                None => return 0,
            }
        }
    }

    /// Opens the top-level object.
    pub(super) fn open_object(&mut self) -> Result<(), Fault> {
        if self.non_ws() != b'{' {
            return Err(Fault {
                at: self.pos,
                what: NOT_OBJECT,
            });
        }
        self.pos += 1;
        Ok(())
    }

    /// The next member name of the top-level object (see [`Scanner::last_string`])
    /// and its `:`; `None` after the object's closing brace, or at a fault. `first`
    /// is true until the first call.
    pub(super) fn next_member(&mut self, first: &mut bool) -> Option<&'a str> {
        self.member(first).ok().flatten()
    }

    fn member(&mut self, first: &mut bool) -> Result<Option<&'a str>, Stop> {
        let mut c = self.non_ws();
        if c == b'}' {
            self.pos += 1;
            return Ok(None);
        }
        if *first {
            *first = false;
        } else if c == b',' {
            self.pos += 1;
            c = self.non_ws();
        } else {
            return self.fail("expected `,` or `}`");
        }
        if c != b'"' {
            return self.fail("expected a member name");
        }
        self.name_and_colon().map(Some)
    }

    /// A member name (the cursor is on its quote) and its colon.
    #[inline]
    fn name_and_colon(&mut self) -> Result<&'a str, Stop> {
        let name = self.string()?;
        if self.non_ws() != b':' {
            return self.fail("expected `:`");
        }
        self.pos += 1;
        Ok(name)
    }

    /// Only whitespace may follow the top-level object; also reports a fault the scan
    /// stopped at.
    pub(super) fn finish(&mut self) -> Result<(), Fault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        self.non_ws();
        if self.pos == self.text.len() {
            Ok(())
        } else {
            Err(Fault {
                at: self.pos,
                what: "trailing characters after the object",
            })
        }
    }

    /// Consumes `[` if the next value is an array.
    pub(super) fn open_array(&mut self) -> bool {
        let is_array = self.non_ws() == b'[';
        self.pos += usize::from(is_array);
        is_array
    }

    /// Whether another element follows in the array just opened (consuming its `,`);
    /// `false` when the array ends (consuming its `]`) or at a fault. `first` is true
    /// until the first call.
    pub(super) fn next_element(&mut self, first: &mut bool) -> bool {
        match self.non_ws() {
            b']' => {
                self.pos += 1;
                false
            }
            _ if *first => {
                *first = false;
                true
            }
            b',' => {
                self.pos += 1;
                true
            }
            _ => self.fail::<()>("expected `,` or `]`").is_ok(),
        }
    }

    /// A string value (see [`Scanner::last_string`]); `None` for any other value,
    /// which is skipped, or at a fault. `depth` is the nesting level of the value's
    /// container.
    #[inline]
    pub(super) fn string_or_skip(&mut self, depth: usize) -> Option<&'a str> {
        if self.non_ws() == b'"' {
            self.string().ok()
        } else {
            self.skip(depth);
            None
        }
    }

    /// A number value; `None` for any other value, which is skipped, or at a fault.
    pub(super) fn number_or_skip(&mut self, depth: usize) -> Option<Number<'a>> {
        if matches!(self.non_ws(), b'-' | b'0'..=b'9') {
            self.number().ok()
        } else {
            self.skip(depth);
            None
        }
    }

    /// Skips one value of any kind, checking its syntax; `depth` is the nesting level
    /// of its container (1 for a member of the top-level object). A fault is kept.
    #[inline]
    pub(super) fn skip(&mut self, depth: usize) {
        // Strings and numbers, the usual values, without the container machinery.
        let _stopped = match self.non_ws() {
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => self.skip_any(depth),
        };
    }

    /// [`Scanner::skip`] for any value, containers included. Iterative: the
    /// containers opened here are a bit stack, so no input can deepen the call stack.
    fn skip_any(&mut self, depth: usize) -> Result<(), Stop> {
        // Bit i set: the i-th innermost open container is an array.
        let mut arrays: u64 = 0;
        let mut open = 0usize;
        loop {
            // A value starts here.
            match self.non_ws() {
                c @ (b'{' | b'[') => {
                    if depth + open >= MAX_DEPTH {
                        return self.fail(TOO_DEEP);
                    }
                    self.pos += 1;
                    let is_array = c == b'[';
                    arrays = (arrays << 1) | u64::from(is_array);
                    open += 1;
                    let next = self.non_ws();
                    if next == if is_array { b']' } else { b'}' } {
                        self.pos += 1;
                        arrays >>= 1;
                        open -= 1;
                    } else {
                        if !is_array {
                            if next != b'"' {
                                return self.fail("expected a member name");
                            }
                            self.name_and_colon()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return self.fail("expected a value"),
            }
            // After a value: close containers until one continues with a `,`.
            loop {
                if open == 0 {
                    return Ok(());
                }
                let is_array = arrays & 1 == 1;
                match (self.non_ws(), is_array) {
                    (b',', true) => {
                        self.pos += 1;
                        break;
                    }
                    (b',', false) => {
                        self.pos += 1;
                        if self.non_ws() != b'"' {
                            return self.fail("expected a member name");
                        }
                        self.name_and_colon()?;
                        break;
                    }
                    (b']', true) | (b'}', false) => {
                        self.pos += 1;
                        arrays >>= 1;
                        open -= 1;
                    }
                    (_, true) => return self.fail("expected `,` or `]`"),
                    (_, false) => return self.fail("expected `,` or `}`"),
                }
            }
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), Stop> {
        if self.text.as_bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.fail("invalid literal")
        }
    }

    /// A string; the cursor is on its opening quote and is left after the closing
    /// one. The common case — no escape — is a SWAR scan to the closing quote.
    #[inline(always)]
    fn string(&mut self) -> Result<&'a str, Stop> {
        let start = self.pos + 1;
        if let Some(n) = first_string_special(self.text.as_bytes(), start) {
            let end = start + n;
            if self.text.as_bytes()[end] == b'"' {
                self.pos = end + 1;
                self.escaped = false;
                // Both ends are ASCII quotes, so this slice is on char boundaries.
                return Ok(&self.text[start..end]);
            }
        }
        self.string_with_escapes(start)
    }

    /// [`Scanner::string`] past its fast path: escapes (checked here, decoded only
    /// when the string is wanted), control characters and the end of the input.
    #[cold]
    #[inline(never)]
    fn string_with_escapes(&mut self, start: usize) -> Result<&'a str, Stop> {
        let b = self.text.as_bytes();
        let mut i = start;
        let mut escaped = false;
        loop {
            let Some(n) = first_string_special(b, i) else {
                return self.fail_at(start - 1, "unterminated string");
            };
            i += n;
            match b[i] {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    i = self.escape(i)?;
                }
                _ => return self.fail_at(i, "control character in a string"),
            }
        }
        self.pos = i + 1;
        self.escaped = escaped;
        Ok(&self.text[start..i])
    }

    /// Checks the escape whose backslash is at `i`; returns the index after it. A
    /// `\u` escape of a UTF-16 surrogate must be a high one followed by a low one.
    fn escape(&mut self, i: usize) -> Result<usize, Stop> {
        let b = self.text.as_bytes();
        let what = match b.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => return Ok(i + 2),
            Some(b'u') => match hex4(b, i + 2) {
                None => "invalid \\u escape",
                Some(0xD800..=0xDBFF) => {
                    let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                        .then(|| hex4(b, i + 8))
                        .flatten();
                    match low {
                        Some(0xDC00..=0xDFFF) => return Ok(i + 12),
                        _ => "lone surrogate in a \\u escape",
                    }
                }
                Some(0xDC00..=0xDFFF) => "lone surrogate in a \\u escape",
                Some(_) => return Ok(i + 6),
            },
            _ => "invalid escape",
        };
        self.fail_at(i, what)
    }

    /// A number; the cursor is on its first byte. RFC 8259 grammar only (no `+1`,
    /// `.5`, `1.`, leading zeros, `NaN`), and within f64's range, as serde_json —
    /// which later turns the payload into the response's `Struct` — requires.
    fn number(&mut self) -> Result<Number<'a>, Stop> {
        let b = self.text.as_bytes();
        let start = self.pos;
        let invalid = |sc: &mut Self| sc.fail_at(start, "invalid number");
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let negative = b.get(start) == Some(&b'-');
        let int_start = start + usize::from(negative);
        // The integer part, accumulated as it is read (18 digits cannot overflow).
        let mut value: u64 = 0;
        let mut i = int_start;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = b.get(i) {
                    value = value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                    i += 1;
                }
            }
            _ => return invalid(self),
        }
        let int_digits = i - int_start;
        let mut integer = true;
        if b.get(i) == Some(&b'.') {
            integer = false;
            if !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                return invalid(self);
            }
            i = digits(i + 1);
        }
        if let Some(b'e' | b'E') = b.get(i) {
            integer = false;
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if !b.get(i).is_some_and(u8::is_ascii_digit) {
                return invalid(self);
            }
            i = digits(i);
        }
        let text = &self.text[start..i];
        let small = (integer && int_digits <= 18)
            .then(|| i64::try_from(value).ok())
            .flatten()
            .map(|v| if negative { -v } else { v });
        // A small integer is well within f64's range; anything else is parsed once
        // to check, as serde_json refuses what overflows to infinity.
        if small.is_none() && !text.parse::<f64>().is_ok_and(f64::is_finite) {
            return self.fail_at(start, "number out of range");
        }
        self.pos = i;
        Ok(Number {
            text,
            small,
            integer,
        })
    }
}

/// Four hex digits at `i`, if they are there.
fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let digits = b.get(i..i + 4)?;
    let mut n = 0;
    for &d in digits {
        n = n << 4 | char::from(d).to_digit(16)?;
    }
    Some(n)
}

/// Decodes the escapes of a string that [`Scanner::string`] has checked.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let b = raw.as_bytes();
    let mut rest = 0;
    while let Some(offset) = raw[rest..].find('\\') {
        let i = rest + offset;
        out.push_str(&raw[rest..i]);
        let (ch, len) = match b.get(i + 1) {
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(b'u') => {
                let high = hex4(b, i + 2).unwrap_or(0xFFFD);
                if (0xD800..=0xDBFF).contains(&high) {
                    let low = hex4(b, i + 8).unwrap_or(0xDC00);
                    let code =
                        0x1_0000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                    (char::from_u32(code).unwrap_or('\u{FFFD}'), 12)
                } else {
                    (char::from_u32(high).unwrap_or('\u{FFFD}'), 6)
                }
            }
            // `"`, `\` and `/` stand for themselves.
            Some(&c) => (char::from(c), 2),
            None => break,
        };
        out.push(ch);
        rest = i + len;
    }
    out.push_str(raw.get(rest..).unwrap_or_default());
    out
}

/// How many member names [`Names`] compares linearly before it switches to a hash
/// set (so that a payload of thousands of tiny members stays linear).
const INLINE_NAMES: usize = 16;

/// The member names of one object seen so far, compared decoded (so `"\u0061"`
/// repeats `"a"`). Names without escapes stay borrowed, and the first
/// [`INLINE_NAMES`] of them are kept without allocating.
#[derive(Debug)]
pub(super) struct Names<'a> {
    few: [&'a str; INLINE_NAMES],
    len: usize,
    /// Names that had escapes, decoded (rare).
    decoded: Vec<String>,
    /// Every name, once there are more than fit above.
    many: Option<HashSet<Cow<'a, str>>>,
}

impl<'a> Names<'a> {
    /// No names yet.
    pub(super) fn new() -> Self {
        Self {
            few: [""; INLINE_NAMES],
            len: 0,
            decoded: Vec::new(),
            many: None,
        }
    }

    /// Records `name`; `false` if it was already there.
    pub(super) fn insert(&mut self, name: Cow<'a, str>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(name);
        }
        if self.few[..self.len].contains(&name.as_ref()) || self.decoded.iter().any(|d| *d == name)
        {
            return false;
        }
        match name {
            Cow::Borrowed(b) if self.len < INLINE_NAMES => {
                self.few[self.len] = b;
                self.len += 1;
            }
            Cow::Owned(o) if self.decoded.len() < INLINE_NAMES => self.decoded.push(o),
            name => {
                let mut many: HashSet<Cow<'a, str>> = self.few[..self.len]
                    .iter()
                    .map(|&b| Cow::Borrowed(b))
                    .chain(self.decoded.drain(..).map(Cow::Owned))
                    .collect();
                many.insert(name);
                self.many = Some(many);
            }
        }
        true
    }
}
