//! Relay frame headers: peeking never panics and agrees with decoding.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peerpipe_proto::relay::RelayHeader;

fuzz_target!(|data: &[u8]| {
    let peeked = RelayHeader::peek(data);
    let mut bytes = Bytes::copy_from_slice(data);
    let decoded = RelayHeader::decode(&mut bytes);
    assert_eq!(peeked, decoded);
    if decoded.is_ok() {
        assert_eq!(bytes.len(), data.len() - peerpipe_proto::relay::HEADER_LEN);
    }
});
