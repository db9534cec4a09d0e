//! Event ids. An id is also the `Nats-Msg-Id` JetStream deduplicates by, and what `lift`
//! names, so it must be unique, header-safe and easy to copy.
//!
//! - [`new_event_id`]: a fresh id for a one-off event — 26 characters of Crockford base32,
//!   48 bits of milliseconds then 80 random bits (the ULID layout), so ids sort by time.
//! - [`bulk_event_id`]: the id of one line of a bulk file — derived from the file's content,
//!   the line number and the line's resolved times, so running the same file again produces
//!   the same ids and nothing is revoked twice, while a different file never reuses an id.
//!   A line whose cut-off or expiry is relative (`now`, `+30d`) gets a new id once those
//!   resolve to other times: sidecars ignore an id they have applied, so a re-run days
//!   later must not reuse the old one, or its later cut-off would be silently dropped.

use aws_lc_rs::digest;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A fresh, time-ordered event id, e.g. `01KA3V8XQ2C5T7M9P0R4W6Y8ZB`.
pub fn new_event_id(now_ms: i64) -> String {
    let mut random = [0u8; 10];
    // The system RNG failing is not recoverable in any useful way; a time-only id would
    // collide, so fall back to hashing the time with the process id and a stack address.
    if aws_lc_rs::rand::fill(&mut random).is_err() {
        let seed = format!("{now_ms}-{}-{:p}", std::process::id(), &random);
        random.copy_from_slice(&digest::digest(&digest::SHA256, seed.as_bytes()).as_ref()[..10]);
    }
    ulid(now_ms, random)
}

/// The ULID text of a millisecond time and 80 random bits.
pub fn ulid(now_ms: i64, random: [u8; 10]) -> String {
    let ms = u128::try_from(now_ms.max(0)).unwrap_or(0) & ((1 << 48) - 1);
    let mut value = ms << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (72 - 8 * i);
    }
    (0..26)
        .rev()
        .map(|i| CROCKFORD[((value >> (5 * i)) & 0x1f) as usize] as char)
        .collect()
}

/// The digest that names a bulk file in its events' ids: the first 8 bytes of SHA-256 of its
/// exact bytes, as 16 hex digits. Independent of the file's path or name.
pub fn file_digest(content: &[u8]) -> String {
    digest::digest(&digest::SHA256, content).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The id of the event for line `line` (1-based) of the file with digest `file_digest`,
/// with its resolved cut-off (for kinds that have one) and expiry (if set), Unix seconds:
/// `bulk-<digest>-<line>[-c<cutoff>][-e<expires_at>]`.
pub fn bulk_event_id(
    file_digest: &str,
    line: u64,
    cutoff: Option<i64>,
    expires_at: Option<i64>,
) -> String {
    let mut id = format!("bulk-{file_digest}-{line}");
    if let Some(c) = cutoff {
        id.push_str(&format!("-c{c}"));
    }
    if let Some(e) = expires_at {
        id.push_str(&format!("-e{e}"));
    }
    id
}

#[cfg(test)]
mod tests;
