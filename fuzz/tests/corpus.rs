//! The fuzz targets' checks over their committed corpora, on stable Rust without
//! libFuzzer: every committed input (seeds and regressions) passes, the seeds are
//! what `seeds()` generates, and they reach the outcomes the targets are for.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml`; to rewrite the seeds after changing
//! a generator: `FUZZ_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml`.

use std::path::{Path, PathBuf};

use denylist_fuzz::{Outcome, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.expect("corpus entry").path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn is_seed(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("seed-"))
}

#[test]
fn committed_seeds_are_the_generated_ones() {
    let write = std::env::var_os("FUZZ_WRITE_SEEDS").is_some();
    for (target, _, seeds) in TARGETS {
        let dir = corpus_dir(target);
        let seeds = seeds();
        if write {
            std::fs::create_dir_all(&dir).expect("corpus dir");
            for stale in files(&dir).into_iter().filter(|p| is_seed(p)) {
                std::fs::remove_file(stale).expect("remove old seed");
            }
            for (name, bytes) in &seeds {
                std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
            }
        }
        let committed: Vec<PathBuf> = files(&dir).into_iter().filter(|p| is_seed(p)).collect();
        assert_eq!(
            committed.len(),
            seeds.len(),
            "{target}: committed seeds differ from seeds(); rerun with FUZZ_WRITE_SEEDS=1"
        );
        for (name, bytes) in &seeds {
            let path = dir.join(format!("seed-{name}"));
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == *bytes,
                "{}: differs from seeds(); rerun with FUZZ_WRITE_SEEDS=1",
                path.display()
            );
            // Seeds are starting points, not bulk: keep the repository small.
            assert!(bytes.len() <= 4096, "{} is over 4 KiB", path.display());
        }
    }
}

#[test]
fn every_committed_input_passes_its_target() {
    for (target, run, _) in TARGETS {
        let dir = corpus_dir(target);
        let inputs = files(&dir);
        assert!(
            !inputs.is_empty(),
            "{target}: no corpus in {}",
            dir.display()
        );
        for input in inputs {
            let data = std::fs::read(&input).expect("corpus file");
            // A panic names the target's broken invariant; say which input it was.
            eprintln!("{target}: {}", input.display());
            run(&data);
        }
    }
}

/// Seeds whose outcome the target exists to check; a fixture that refused every
/// token, say, would pass the other tests and fuzz nothing of interest.
const EXPECTED: &[(&str, &str, Outcome)] = &[
    ("verify_token", "append-hs256", Outcome::Accepted),
    ("verify_token", "append-rs256", Outcome::Refused),
    ("verify_token", "append-es256", Outcome::Accepted),
    ("verify_token", "append-too-large", Outcome::Refused),
    ("verify_token", "sign-hs256", Outcome::Accepted),
    (
        "verify_token",
        "sign-eddsa-revoked-subject",
        Outcome::Refused,
    ),
    ("verify_token", "sign-revoked-jti", Outcome::Refused),
    ("verify_token", "sign-expired", Outcome::Refused),
    ("verify_token", "sign-aud-list", Outcome::Accepted),
    ("verify_token", "sign-duplicate-iss", Outcome::Refused),
    ("verify_token", "raw-alg-none", Outcome::Refused),
    ("event_decoders", "revoke-subject", Outcome::Accepted),
    ("event_decoders", "lift", Outcome::Accepted),
    ("event_decoders", "groups-99", Outcome::Accepted),
    // Issue 13: the borrowed decoder accepted this while prost refused it.
    ("event_decoders", "groups-100", Outcome::Refused),
    ("snapshot_open", "object-sealed", Outcome::Accepted),
    ("snapshot_open", "object-tampered", Outcome::Refused),
    ("snapshot_open", "body-events", Outcome::Accepted),
    ("snapshot_open", "body-count-mismatch", Outcome::Refused),
    ("snapshot_open", "body-nested-groups", Outcome::Refused),
    ("revocations_file", "valid", Outcome::Accepted),
    ("revocations_file", "duplicate-id", Outcome::Refused),
    // Finding 2: an explicit zero cut-off meant the epoch in a file, "unset" on the wire.
    ("revocations_file", "zero-cutoff", Outcome::Refused),
    ("config_parse", "standalone", Outcome::Accepted),
    ("config_parse", "env", Outcome::Accepted),
    ("config_parse", "bad-env", Outcome::Refused),
    ("config_parse", "mixed-algorithms", Outcome::Refused),
    ("local_state", "state-journal", Outcome::Accepted),
    ("local_state", "state-alone", Outcome::Accepted),
    ("local_state", "journal-cut", Outcome::Accepted),
    ("local_state", "journal-other-state", Outcome::Accepted),
    ("local_state", "state-flipped", Outcome::Refused),
    ("local_state", "sealed-by-harness", Outcome::Accepted),
];

#[test]
fn seeds_reach_the_outcomes_their_targets_check() {
    for &(target, seed, want) in EXPECTED {
        let (_, run, seeds) = TARGETS
            .iter()
            .find(|(name, _, _)| *name == target)
            .expect("a target");
        let (_, bytes) = seeds()
            .into_iter()
            .find(|(name, _)| *name == seed)
            .unwrap_or_else(|| panic!("{target} has no seed {seed}"));
        assert_eq!(run(&bytes), want, "{target}/seed-{seed}");
    }
}
