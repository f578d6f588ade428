//! Direct-path signals: decoding never panics, and what decodes re-encodes to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerpipe_proto::direct::DirectSignal;

fuzz_target!(|data: &[u8]| {
    if let Ok(signal) = DirectSignal::decode(data) {
        assert_eq!(signal.encode(), data);
    }
});
