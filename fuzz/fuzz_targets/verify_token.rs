//! libFuzzer entry point of `verify_token`; the checks are in `src/verify_token.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    denylist_fuzz::verify_token::run(data);
});
