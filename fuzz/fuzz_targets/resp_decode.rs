//! RESP2 replies: decoding arbitrary bytes never panics, consumes reply after
//! reply until an error or an incomplete one, and never claims more bytes than
//! it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerpipe_proto::resp;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((_reply, used))) = resp::decode(rest) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
    }
});
