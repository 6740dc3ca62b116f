#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| newcache_fuzz_targets::meta_reply(data));
