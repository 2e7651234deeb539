#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| adain_fuzz::image(data));
