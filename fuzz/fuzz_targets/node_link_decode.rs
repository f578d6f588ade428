//! Frames between cluster nodes: decoding arbitrary bytes never panics, never
//! claims more bytes than it was given, and a frame that decodes encodes back
//! to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerpipe_server::node_link;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = node_link::decode(rest) {
        assert!(used > 4 && used <= rest.len());
        let mut again = Vec::new();
        node_link::encode(&frame, &mut again);
        assert_eq!(node_link::decode(&again), Ok(Some((frame, again.len()))));
        rest = &rest[used..];
    }
});
