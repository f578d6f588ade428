//! Connection frames: decoding never panics, decoded frames re-encode to the same
//! bytes, and a stream of them fed to the reassembler respects its size cap.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use peerpipe_proto::frame::{Frame, Reassembler};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut reassembler = Reassembler::new(MAX);
    // Length-prefixed frames: [len: u8][frame bytes].
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let Ok(frame) = Frame::decode(Bytes::copy_from_slice(bytes)) else { continue };
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        assert_eq!(out.len(), frame.encoded_len());
        if let Frame::Msg { flags, id, chunk } = frame {
            assert_eq!(&out[..], bytes);
            match reassembler.push(flags, id, chunk) {
                Ok(Some(msg)) => assert!(msg.data.len() <= MAX),
                Ok(None) => {}
                Err(_) => return,
            }
        }
    }
});
