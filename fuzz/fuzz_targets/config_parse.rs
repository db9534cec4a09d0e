//! libFuzzer entry point of `config_parse`; the checks are in `src/config_parse.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    denylist_fuzz::config_parse::run(data);
});
