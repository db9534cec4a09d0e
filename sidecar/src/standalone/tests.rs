use std::collections::HashMap;
use std::io::Write as _;

use super::*;
use crate::clock::ManualClock;
use crate::config::StalenessPolicy;
use crate::denylist::{DenylistSettings, TokenFacts};

const NOW_MS: i64 = 1_800_000_000_000;

fn line(id: &str, jti: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","action":"revoke","kind":"jti","issuer":"iss","targets":["{jti}"],"created_at_ms":{NOW_MS}}}"#
    )
}

fn setup() -> (Arc<Denylist>, Arc<Freshness>) {
    let clock = ManualClock::new(NOW_MS);
    let denylist = Arc::new(Denylist::new(
        DenylistSettings {
            expected_entries: 1000,
            bloom_fp_rate: 0.001,
            max_lifetimes: HashMap::new(),
            default_max_lifetime: 3600,
        },
        clock.clone(),
    ));
    let freshness = Arc::new(Freshness::new(
        clock,
        Duration::from_secs(30),
        StalenessPolicy::FailClosed,
    ));
    (denylist, freshness)
}

fn revoked(d: &Denylist, jti: &str) -> bool {
    d.is_revoked(&TokenFacts {
        issuer: "iss",
        jti: Some(jti),
        subject: None,
        session: None,
        kid: None,
        issued_at: Some(NOW_MS / 1000),
    })
    .is_some()
}

#[test]
fn bad_line_is_reported_with_its_number() {
    let text = format!(
        "# comment\n{}\n\n{{\"event_id\":\"e2\",\"action\":\"revoke\"}}\n",
        line("e1", "a")
    );
    let err = parse_file(Path::new("r.jsonl"), &text).unwrap_err();
    assert!(
        matches!(err, RevocationsFileError::BadLine { line: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("line 4"), "{err}");
}

#[test]
fn duplicate_event_ids_are_rejected() {
    let text = format!("{}\n{}\n", line("e1", "a"), line("e1", "b"));
    let err = parse_file(Path::new("r.jsonl"), &text).unwrap_err();
    assert!(
        matches!(
            err,
            RevocationsFileError::DuplicateId {
                line: 2,
                first: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn reload_applies_changes_and_a_bad_file_keeps_the_last_good_set() {
    let (denylist, freshness) = setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.jsonl");
    std::fs::write(&path, format!("{}\n", line("e1", "a"))).unwrap();
    let mut source = FileSource::new(path.clone(), Arc::clone(&denylist), Arc::clone(&freshness));

    assert!(source.load().unwrap());
    assert!(freshness.is_ready());
    assert_eq!(freshness.view().sequence, 1);
    assert!(revoked(&denylist, "a"));

    // A change that only adds events applies at once.
    std::fs::write(&path, format!("{}\n{}\n", line("e1", "a"), line("e2", "b"))).unwrap();
    assert!(source.load().unwrap());
    assert!(revoked(&denylist, "a") && revoked(&denylist, "b"));

    // One that withdraws a revocation (e1 gone) could be a file read half-written: it
    // waits until a later poll finds it unchanged, and revoking goes on meanwhile.
    std::fs::write(&path, format!("{}\n{}\n", line("e2", "b"), line("e3", "c"))).unwrap();
    assert!(!source.load().unwrap(), "held back for one poll");
    assert!(revoked(&denylist, "a"), "still revoked while held back");
    assert!(!revoked(&denylist, "c"));
    assert!(
        source.load().unwrap(),
        "unchanged at the next poll: applied"
    );
    assert!(!revoked(&denylist, "a"));
    assert!(revoked(&denylist, "b") && revoked(&denylist, "c"));

    // Changing an event in force is withdrawing it too.
    std::fs::write(
        &path,
        format!("{}\n{}\n", line("e2", "b"), line("e3", "c2")),
    )
    .unwrap();
    assert!(!source.load().unwrap(), "an edited event is held back");
    assert!(revoked(&denylist, "c"));
    assert!(source.load().unwrap());
    assert!(revoked(&denylist, "c2") && !revoked(&denylist, "c"));
    std::fs::write(&path, format!("{}\n{}\n", line("e2", "b"), line("e3", "c"))).unwrap();
    assert!(!source.load().unwrap());
    assert!(source.load().unwrap());

    // A broken file (valid first line, bad second line) changes nothing.
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "{}", line("e4", "d")).unwrap();
    writeln!(f, "{{not json").unwrap();
    drop(f);
    let err = source.load().unwrap_err();
    assert!(
        matches!(err, RevocationsFileError::BadLine { line: 2, .. }),
        "{err}"
    );
    assert!(revoked(&denylist, "b") && revoked(&denylist, "c"));
    assert!(!revoked(&denylist, "d"));
    assert_eq!(freshness.view().sequence, 5);
}

#[test]
fn missing_file_is_an_error_at_load() {
    let (denylist, freshness) = setup();
    let mut source = FileSource::new(
        PathBuf::from("/nonexistent/revocations.jsonl"),
        denylist,
        freshness.clone(),
    );
    assert!(matches!(
        source.load(),
        Err(RevocationsFileError::Read { .. })
    ));
    assert!(!freshness.is_ready());
}
