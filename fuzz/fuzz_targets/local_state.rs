//! libFuzzer entry point of `local_state`; the checks are in `src/local_state.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    denylist_fuzz::local_state::run(data);
});
