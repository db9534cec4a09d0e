//! libFuzzer entry point of `snapshot_open`; the checks are in `src/snapshot_open.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    denylist_fuzz::snapshot_open::run(data);
});
