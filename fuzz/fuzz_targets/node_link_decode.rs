//! Frames between cluster nodes: decoding arbitrary bytes never panics, never
//! claims more bytes than it was given, and a frame that decodes encodes back
//! to a frame equal to it; the decoder of owned bytes agrees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerpipe_proto::node_link;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = node_link::decode(rest) {
        assert!(used > 4 && used <= rest.len());
        let shared = node_link::decode_shared(bytes::Bytes::copy_from_slice(&rest[4..used]));
        assert_eq!(shared.as_ref(), Ok(&frame));
        let mut again = Vec::new();
        node_link::encode(&frame, &mut again);
        assert_eq!(node_link::decode(&again), Ok(Some((frame, again.len()))));
        rest = &rest[used..];
    }
});
