//! Session packets and frames: decoding never panics, and what decodes re-encodes
//! to the same bytes with the announced length.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peerpipe_proto::session::frame::Frame;
use peerpipe_proto::session::packet::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::decode(&mut Bytes::copy_from_slice(data)) {
        let mut out = Vec::new();
        packet.encode(&mut out);
        assert_eq!(out.len(), packet.encoded_len());
        assert_eq!(&out[..], data);
    }
    if let Ok(frames) = Frame::decode_all(Bytes::copy_from_slice(data)) {
        let mut out = Vec::new();
        for f in &frames {
            let before = out.len();
            f.encode(&mut out);
            assert_eq!(out.len() - before, f.encoded_len());
        }
        assert_eq!(&out[..], data);
    }
});
