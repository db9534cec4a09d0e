//! libFuzzer entry point of `revocations_file`; the checks are in `src/revocations_file.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    denylist_fuzz::revocations_file::run(data);
});
