use super::*;

/// 2026-01-01T00:00:00Z
const NOW: i64 = 1_767_225_600;

#[test]
fn now_and_unix_seconds() {
    assert_eq!(parse_time("now", NOW), Ok(NOW));
    assert_eq!(parse_time(" NOW ", NOW), Ok(NOW));
    assert_eq!(parse_time("1767225600", 0), Ok(NOW));
    assert_eq!(parse_time("0", NOW), Ok(0));
}

#[test]
fn milliseconds_are_caught() {
    assert_eq!(
        parse_time("1767225600000", NOW),
        Err(TimeError::LooksLikeMillis(1_767_225_600_000))
    );
}

#[test]
fn rfc3339_with_any_offset_and_dates() {
    assert_eq!(parse_time("2026-01-01T00:00:00Z", 0), Ok(NOW));
    assert_eq!(parse_time("2026-01-01T02:00:00+02:00", 0), Ok(NOW));
    assert_eq!(parse_time("2025-12-31T19:00:00-05:00", 0), Ok(NOW));
    assert_eq!(parse_time("2026-01-01", 0), Ok(NOW));
}

#[test]
fn signed_durations_are_relative_to_now() {
    assert_eq!(parse_time("+30d", NOW), Ok(NOW + 30 * 86_400));
    assert_eq!(parse_time("-2h 30m", NOW), Ok(NOW - 9_000));
    assert_eq!(parse_time("+1h", NOW), Ok(NOW + 3_600));
}

#[test]
fn garbage_and_negative_times_are_errors() {
    for bad in ["", "yesterday", "2026-13-01", "+", "+soon", "12:00"] {
        assert!(
            matches!(parse_time(bad, NOW), Err(TimeError::Unrecognised(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        parse_time("-100y", 1000),
        Err(TimeError::OutOfRange(_))
    ));
    let message = parse_time("yesterday", NOW).unwrap_err().to_string();
    assert!(message.contains("RFC 3339"), "{message}");
}

#[test]
fn since_takes_a_bare_duration_as_ago() {
    assert_eq!(parse_since("2h", NOW), Ok(NOW - 7_200));
    assert_eq!(parse_since("1d 12h", NOW), Ok(NOW - 129_600));
    // Other forms mean what parse_time says.
    assert_eq!(parse_since("1767225600", 0), Ok(NOW));
    assert_eq!(parse_since("2026-01-01T00:00:00Z", 0), Ok(NOW));
    assert_eq!(parse_since("now", NOW), Ok(NOW));
}

#[test]
fn formats_in_utc() {
    assert_eq!(format_unix(NOW), "2026-01-01T00:00:00Z");
    assert_eq!(format_unix_ms(NOW * 1000 + 250), "2026-01-01T00:00:00.25Z");
    assert_eq!(format_unix_ms(NOW * 1000), "2026-01-01T00:00:00Z");
}
