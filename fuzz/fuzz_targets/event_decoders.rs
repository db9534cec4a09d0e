//! libFuzzer entry point of `event_decoders`; the checks are in `src/event_decoders.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    denylist_fuzz::event_decoders::run(data);
});
