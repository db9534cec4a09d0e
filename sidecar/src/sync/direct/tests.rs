use super::*;

/// A stored message as a direct-get reply carries it (built from its headers, as the
/// reader does: the sidecar does not name the `time` crate).
fn message(sequence: u64) -> StreamMessage {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Stream", "DENYLIST");
    headers.insert("Nats-Subject", "denylist.v1.events.jti");
    headers.insert("Nats-Sequence", sequence.to_string().as_str());
    headers.insert("Nats-Time-Stamp", "2026-01-01T00:00:00Z");
    headers.insert(NUM_PENDING, "0");
    let reply = async_nats::Message {
        subject: "_INBOX.test.1".into(),
        reply: None,
        payload: bytes::Bytes::from_static(b"event"),
        headers: Some(headers),
        status: None,
        description: None,
        length: 0,
    };
    StreamMessage::try_from(reply).expect("a well-formed direct-get reply")
}

fn messages(sequences: impl IntoIterator<Item = u64>) -> Vec<StreamMessage> {
    sequences.into_iter().map(message).collect()
}

fn sequences(messages: &[StreamMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.sequence).collect()
}

#[test]
fn a_range_below_its_start_is_read_at_once() {
    assert!(Cursor::new(11, UpTo::Sequence(10)).done);
    assert!(!Cursor::new(10, UpTo::Sequence(10)).done);
    assert!(!Cursor::new(10, UpTo::End).done);
    // Sequence 0 does not exist: a read from 0 starts at 1.
    assert_eq!(Cursor::new(0, UpTo::End).next, 1);
}

#[test]
fn requests_never_ask_past_the_bound() {
    let cursor = Cursor::new(95, UpTo::Sequence(100));
    assert_eq!(cursor.limit(512), 6);
    assert_eq!(Cursor::new(1, UpTo::Sequence(100_000)).limit(512), 512);
    assert_eq!(Cursor::new(1, UpTo::End).limit(512), 512);
    assert_eq!(
        Cursor::new(1, UpTo::End).limit(0),
        1,
        "a batch of 0 is a plain get"
    );
    assert_eq!(Cursor::new(1, UpTo::Sequence(u64::MAX)).limit(64), 64);
}

#[test]
fn gaps_inside_a_batch_are_stepped_over() {
    let mut cursor = Cursor::new(1, UpTo::Sequence(10));
    let mut batch = messages([1, 2, 6, 7]);
    cursor.accept(&mut batch, 3);
    assert_eq!(sequences(&batch), [1, 2, 6, 7]);
    assert_eq!((cursor.next, cursor.done), (8, false));
    let mut batch = messages([8, 10]);
    cursor.accept(&mut batch, 0);
    assert_eq!((cursor.next, cursor.done), (11, true));
}

#[test]
fn messages_past_the_bound_are_dropped_and_cover_the_rest() {
    // The replica skipped 4..=9 (not stored) and went on to 12: up to 10 is covered.
    let mut cursor = Cursor::new(1, UpTo::Sequence(10));
    let mut batch = messages([1, 2, 3, 12, 13]);
    cursor.accept(&mut batch, 5);
    assert_eq!(sequences(&batch), [1, 2, 3]);
    assert_eq!((cursor.next, cursor.done), (11, true));
    // Only later messages: nothing of the range is stored.
    let mut cursor = Cursor::new(5, UpTo::Sequence(10));
    let mut batch = messages([20]);
    cursor.accept(&mut batch, 0);
    assert!(batch.is_empty());
    assert_eq!((cursor.next, cursor.done), (11, true));
}

#[test]
fn a_replica_ending_below_the_bound_does_not_end_a_bounded_range() {
    // It may only lag: the range goes on (the next request settles it).
    let mut cursor = Cursor::new(1, UpTo::Sequence(10));
    let mut batch = messages([1, 2, 3]);
    cursor.accept(&mut batch, 0);
    assert_eq!((cursor.next, cursor.done), (4, false));
    cursor.settle(10);
    assert_eq!((cursor.next, cursor.done), (11, true));
}

#[test]
fn an_open_range_ends_where_the_replica_has_nothing_more() {
    let mut cursor = Cursor::new(1, UpTo::End);
    let mut batch = messages([1, 2]);
    cursor.accept(&mut batch, 7);
    assert_eq!((cursor.next, cursor.done), (3, false));
    let mut batch = messages([3, 9]);
    cursor.accept(&mut batch, 0);
    assert_eq!((cursor.next, cursor.done), (10, true));
}

#[test]
fn options_default_to_bounded_batches() {
    let o = DirectReadOptions::default();
    assert_eq!((o.batch, o.max_bytes, o.attempts), (512, 256 * 1024, 8));
    assert_eq!(o.api_prefix, "$JS.API");
}

#[test]
fn errors_carry_the_attempts_made() {
    let e = DirectGetError::NoResponders {
        stream: "S".into(),
        attempts: 1,
    }
    .after_attempts(6);
    assert!(e.to_string().contains("after 6 attempt(s)"), "{e}");
    assert!(e.to_string().contains("stream init"), "{e}");
}
