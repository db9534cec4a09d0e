//! libFuzzer entry point of `receiver_signal`; the checks are in `src/receiver_signal.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    denylist_fuzz::receiver_signal::run(data);
});
