use super::*;

#[test]
fn helpers_build_valid_events() {
    let r = revocation(
        RuleKind::Subject,
        "https://auth.example.com",
        vec!["u1".into()],
    );
    r.validate().unwrap();
    let Action::Revoke(rv) = &r.action else {
        panic!("not a revocation")
    };
    assert_eq!(rv.cutoff, r.created_at_ms / 1000);
    assert_eq!(
        denylist_proto::subjects::subject_for(&r),
        "denylist.v1.events.subject"
    );

    let j = revocation(RuleKind::Jti, "iss", vec!["t".into()]);
    let Action::Revoke(rv) = &j.action else {
        panic!("not a revocation")
    };
    assert_eq!(rv.cutoff, 0);
    assert_ne!(j.event_id, r.event_id);

    let l = lift(vec![r.event_id.clone()]);
    l.validate().unwrap();
    assert_eq!(
        denylist_proto::subjects::subject_for(&l),
        "denylist.v1.events.lift"
    );
}

#[test]
fn only_outages_are_retryable() {
    let invalid = PublishError::Invalid {
        event_id: "x".into(),
        source: denylist_proto::events::EventError::Decode("bad".into()),
    };
    assert!(!invalid.is_retryable());
    assert_eq!(invalid.event_id(), "x");
    let timeout = PublishError::Nats {
        event_id: "y".into(),
        source: jetstream::context::PublishError::new(PublishErrorKind::TimedOut),
    };
    assert!(timeout.is_retryable());
    let too_big = PublishError::Nats {
        event_id: "z".into(),
        source: jetstream::context::PublishError::new(PublishErrorKind::MaxPayloadExceeded),
    };
    assert!(!too_big.is_retryable());
    let no_stream = PublishError::NoStream {
        event_id: "w".into(),
        subject: "denylist.v1.events.jti".into(),
    };
    assert!(no_stream.is_retryable());
    assert!(no_stream.to_string().contains("stream init"));
}
