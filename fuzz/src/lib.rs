//! The bodies of denylist's fuzz targets, as library functions so that the same
//! checks run under libFuzzer (`fuzz_targets/*.rs`, nightly, `cargo fuzz run`) and
//! over the committed corpora in plain `cargo test` (stable, `tests/corpus.rs`).
//!
//! Each target module has `run(data) -> Outcome`, which panics when an invariant
//! breaks (libFuzzer reports a panic as a crash and saves the input), and
//! `seeds()`, the named inputs committed under `corpus/<target>/seed-<name>`.
//! See `README.md` for the invariants and how to run them.

pub mod config_parse;
pub mod event_decoders;
pub mod fixture;
pub mod local_state;
pub mod receiver_signal;
pub mod revocations_file;
pub mod snapshot_open;
pub mod verify_token;

/// What a target made of one input: the committed seeds must reach both, or the
/// target checks less than it claims (`tests/corpus.rs` holds them to that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The code under test accepted the input (and the invariants held).
    Accepted,
    /// It refused the input with an error (and did not panic).
    Refused,
}

impl Outcome {
    /// `Accepted` when `accepted`, else `Refused`.
    pub fn from_bool(accepted: bool) -> Self {
        if accepted {
            Self::Accepted
        } else {
            Self::Refused
        }
    }
}

/// The targets, by name: `(name, run, seeds)`.
pub type Target = (&'static str, fn(&[u8]) -> Outcome, fn() -> Vec<Seed>);

/// A committed seed input: `corpus/<target>/seed-<name>`.
pub type Seed = (&'static str, Vec<u8>);

/// Every target, in the order `scripts/fuzz.sh` runs them.
pub const TARGETS: [Target; 7] = [
    ("verify_token", verify_token::run, verify_token::seeds),
    ("event_decoders", event_decoders::run, event_decoders::seeds),
    ("snapshot_open", snapshot_open::run, snapshot_open::seeds),
    (
        "revocations_file",
        revocations_file::run,
        revocations_file::seeds,
    ),
    ("config_parse", config_parse::run, config_parse::seeds),
    (
        "receiver_signal",
        receiver_signal::run,
        receiver_signal::seeds,
    ),
    ("local_state", local_state::run, local_state::seeds),
];
