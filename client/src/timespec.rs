//! Times as people type them on the command line and in bulk files — `now`, Unix seconds,
//! RFC 3339, a date, or a duration from now — and as `denylistctl` prints them (RFC 3339, UTC).
//!
//! Every parser takes "now" as an argument, so tests pin it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix seconds above this are taken for a mistake (milliseconds given as seconds): it is the
/// year 5138.
const MAX_UNIX_SECS: i64 = 99_999_999_999;

/// Why a time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not any accepted form.
    #[error(
        "{0:?} is not a time: use `now`, Unix seconds, RFC 3339 (2026-05-01T02:00:00Z), a date (2026-05-01) or a duration from now (+30d, -2h)"
    )]
    Unrecognised(String),
    /// Unix seconds so large they are probably milliseconds.
    #[error("{0} is too large for Unix seconds (milliseconds? drop the last three digits)")]
    LooksLikeMillis(i64),
    /// Before 1970 or past the representable range.
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Parses a point in time into Unix seconds. Accepted: `now`; Unix seconds (`1767225600`);
/// RFC 3339 with any offset (`2026-01-01T00:00:00Z`, `2026-01-01T02:00:00+02:00`); a date
/// (`2026-01-01`, midnight UTC); a signed duration from `now_secs` (`+30d`, `-2h 30m`).
pub fn parse_time(input: &str, now_secs: i64) -> Result<i64, TimeError> {
    let s = input.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(now_secs);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s
            .parse()
            .map_err(|_| TimeError::OutOfRange(input.to_owned()))?;
        if secs > MAX_UNIX_SECS {
            return Err(TimeError::LooksLikeMillis(secs));
        }
        return Ok(secs);
    }
    if let Some((sign, rest)) = s
        .strip_prefix('+')
        .map(|r| (1, r))
        .or_else(|| s.strip_prefix('-').map(|r| (-1, r)))
    {
        let d = humantime::parse_duration(rest.trim())
            .map_err(|_| TimeError::Unrecognised(input.to_owned()))?;
        let secs =
            i64::try_from(d.as_secs()).map_err(|_| TimeError::OutOfRange(input.to_owned()))?;
        let t = now_secs
            .checked_add(sign * secs)
            .ok_or_else(|| TimeError::OutOfRange(input.to_owned()))?;
        return non_negative(t, input);
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return non_negative(t.unix_timestamp(), input);
    }
    if let Ok(date) =
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
    {
        return non_negative(date.midnight().assume_utc().unix_timestamp(), input);
    }
    Err(TimeError::Unrecognised(input.to_owned()))
}

/// Like [`parse_time`], but a bare duration means that long ago (`2h` = two hours before
/// now), as in `history --since 2h`.
pub fn parse_since(input: &str, now_secs: i64) -> Result<i64, TimeError> {
    let s = input.trim();
    let starts_with_digit = s.bytes().next().is_some_and(|b| b.is_ascii_digit());
    if starts_with_digit
        && !s.bytes().all(|b| b.is_ascii_digit())
        && let Ok(d) = humantime::parse_duration(s)
    {
        let secs =
            i64::try_from(d.as_secs()).map_err(|_| TimeError::OutOfRange(input.to_owned()))?;
        return non_negative(now_secs.saturating_sub(secs), input);
    }
    parse_time(input, now_secs)
}

fn non_negative(t: i64, input: &str) -> Result<i64, TimeError> {
    if t < 0 {
        Err(TimeError::OutOfRange(input.to_owned()))
    } else {
        Ok(t)
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-01-01T00:00:00Z`).
pub fn format_unix(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs).map_or_else(|_| secs.to_string(), format_datetime)
}

/// Unix milliseconds as RFC 3339 UTC, to the millisecond.
pub fn format_unix_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_or_else(
        |_| ms.to_string(),
        |t| {
            let t = t
                .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
                .unwrap_or(t);
            format_datetime(t)
        },
    )
}

/// A datetime as RFC 3339 in UTC.
pub fn format_datetime(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A datetime as Unix seconds (for comparisons with event times).
pub fn unix_secs(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

#[cfg(test)]
mod tests;
