use super::*;

fn seen(last: u64, confirmed: bool) -> Bound {
    Bound::Seen { last, confirmed }
}

#[test]
fn pending_catch_ups_merge_to_the_widest_bound() {
    assert_eq!(seen(5, false).merge(seen(9, false)), seen(9, false));
    assert_eq!(seen(9, true).merge(seen(5, false)), seen(9, true));
    // The same sequence from the stream itself counts as confirmed.
    assert_eq!(seen(7, false).merge(seen(7, true)), seen(7, true));
    // Asking the stream covers any sequence.
    assert_eq!(seen(7, true).merge(Bound::AskStream), Bound::AskStream);
    assert_eq!(Bound::AskStream.merge(seen(7, false)), Bound::AskStream);
}

#[test]
fn a_live_sequence_is_read_from_its_header() {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(subjects::HEADER_SEQUENCE, "42");
    let message = async_nats::Message {
        subject: "denylist.v1.live.jti".into(),
        reply: None,
        payload: bytes::Bytes::new(),
        headers: Some(headers),
        status: None,
        description: None,
        length: 0,
    };
    assert_eq!(live_sequence(&message), Some(42));
    let bare = async_nats::Message {
        headers: None,
        ..message
    };
    assert_eq!(live_sequence(&bare), None);
}

#[test]
fn reconnects_start_fast_and_stay_jittered_under_the_configured_ceiling() {
    let delay = reconnect_delay(Duration::from_millis(500));
    let first: Vec<_> = (0..100).map(|_| delay(1)).collect();
    assert!(
        first
            .iter()
            .all(|d| *d >= Duration::from_millis(25) && *d <= Duration::from_millis(50)),
        "{first:?}"
    );
    assert!(first.iter().any(|d| *d != first[0]), "not jittered");
    for attempts in [5, 6, 100, usize::MAX] {
        let later: Vec<_> = (0..100).map(|_| delay(attempts)).collect();
        assert!(
            later
                .iter()
                .all(|d| *d >= Duration::from_millis(250) && *d <= Duration::from_millis(500)),
            "attempt {attempts}: {later:?}"
        );
    }
}
