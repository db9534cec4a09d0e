use super::*;

#[test]
fn defaults_match_the_design() {
    let s = StreamSettings::default();
    assert_eq!(s.name, "DENYLIST");
    assert_eq!(s.replicas, 1);
    assert_eq!(s.max_age, Duration::from_secs(30 * 86_400));
    assert_eq!(s.duplicate_window, Duration::from_secs(120));
    s.validate().unwrap();
}

#[test]
fn the_config_stores_events_in_files_and_republishes_them_live() {
    let settings = StreamSettings {
        replicas: 3,
        ..StreamSettings::default()
    };
    let c = settings.to_config();
    assert_eq!(c.name, "DENYLIST");
    assert_eq!(c.subjects, ["denylist.v1.events.>"]);
    assert_eq!(c.storage, StorageType::File);
    assert_eq!(c.num_replicas, 3);
    assert_eq!(c.max_age, settings.max_age);
    assert_eq!(c.duplicate_window, Duration::from_secs(120));
    assert!(c.allow_direct);
    assert_eq!(
        c.republish,
        Some(Republish {
            source: "denylist.v1.events.>".to_owned(),
            destination: "denylist.v1.live.>".to_owned(),
            headers_only: false,
        })
    );
}

#[test]
fn bad_settings_name_the_setting() {
    let bad = |f: fn(&mut StreamSettings)| {
        let mut s = StreamSettings::default();
        f(&mut s);
        match s.validate() {
            Err(StreamError::Invalid { setting, .. }) => setting,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(bad(|s| s.name = "DENY.LIST".into()), "name");
    assert_eq!(bad(|s| s.name = String::new()), "name");
    assert_eq!(bad(|s| s.replicas = 0), "replicas");
    assert_eq!(bad(|s| s.replicas = 7), "replicas");
    assert_eq!(
        bad(|s| s.duplicate_window = Duration::ZERO),
        "duplicate_window"
    );
    assert_eq!(bad(|s| s.max_age = Duration::from_secs(60)), "max_age");
    // Zero keeps events forever.
    let forever = StreamSettings {
        max_age: Duration::ZERO,
        ..StreamSettings::default()
    };
    forever.validate().unwrap();
}

fn info_from(config: &Config, messages: u64) -> jetstream::stream::Info {
    serde_json::from_value(serde_json::json!({
        "config": config,
        "created": "2026-01-01T00:00:00Z",
        "state": {
            "messages": messages,
            "bytes": messages * 100,
            "first_seq": u64::from(messages > 0),
            "first_ts": "2026-01-01T00:00:01Z",
            "last_seq": messages,
            "last_ts": "2026-01-01T00:00:02Z",
            "consumer_count": 0,
        },
    }))
    .unwrap()
}

#[test]
fn a_sound_stream_has_no_problems() {
    let summary = StreamSummary::from_info(&info_from(&StreamSettings::default().to_config(), 3));
    assert_eq!(summary.problems, Vec::<String>::new());
    assert_eq!(summary.storage, "file");
    assert_eq!(summary.messages, 3);
    assert_eq!(summary.last_sequence, 3);
    assert_eq!(summary.max_age_secs, 30 * 86_400);
    assert_eq!(summary.first_time.as_deref(), Some("2026-01-01T00:00:01Z"));
    assert_eq!(
        summary.republish.as_ref().unwrap().destination,
        "denylist.v1.live.>"
    );
}

#[test]
fn problems_a_fleet_would_trip_over_are_reported() {
    let mut config = StreamSettings::default().to_config();
    config.republish = None;
    config.storage = StorageType::Memory;
    config.duplicate_window = Duration::ZERO;
    config.subjects = vec!["other.>".to_owned()];
    config.allow_direct = false;
    let summary = StreamSummary::from_info(&info_from(&config, 0));
    assert_eq!(summary.problems.len(), 5, "{:?}", summary.problems);
    assert!(summary.problems.iter().any(|p| p.contains("live")));
    assert!(summary.problems.iter().any(|p| p.contains("direct gets")));
    assert_eq!(summary.first_time, None);
}

#[test]
fn updating_a_stream_turns_direct_gets_on_and_keeps_foreign_settings() {
    // A stream made before direct gets were used, with a limit set by other means.
    let mut existing = StreamSettings::default().to_config();
    existing.allow_direct = false;
    existing.max_messages = 1_000_000;
    let mut wanted = existing.clone();
    StreamSettings::default().apply_to(&mut wanted);
    assert!(wanted.allow_direct);
    assert_eq!(wanted.max_messages, 1_000_000);
    assert_ne!(wanted, existing, "init must see a change to make");
}

#[test]
fn only_unavailability_is_transient() {
    let unavailable = StreamError::Unavailable {
        name: "S".into(),
        message: "timed out".into(),
    };
    assert!(unavailable.is_transient());
    for permanent in [
        StreamError::NotFound("S".into()),
        invalid("replicas", "x"),
        js_error("S", "replicas > 1 not supported in non-clustered mode"),
    ] {
        assert!(!permanent.is_transient(), "{permanent}");
    }
}
