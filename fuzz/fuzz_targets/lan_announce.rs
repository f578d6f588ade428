//! The LAN announcement decoder never panics on a datagram from the network,
//! and what it accepts re-encodes to an announcement that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerpipe_proto::lan::Announcement;

fuzz_target!(|data: &[u8]| {
    if let Some(a) = Announcement::decode(data) {
        assert!(a.nameplate != 0 && a.port != 0);
        assert_eq!(Announcement::decode(&a.encode()), Some(a));
    }
});
