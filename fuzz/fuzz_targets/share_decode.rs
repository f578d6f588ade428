//! The share decoders never panic on peer input: a collection that decodes
//! holds only safe paths and re-encodes to the same bytes; requests re-encode to
//! themselves; a have-bitmap that decodes re-encodes to the same bytes; a forged
//! outboard never verifies against a hash it was not built from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerpipe_share::bitmap::Bitmap;
use peerpipe_share::collection::{Collection, validate_path};
use peerpipe_share::hash::{Hash, Outboard};
use peerpipe_share::wire::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(collection) = Collection::decode(data) {
        assert_eq!(collection.encode(), data);
        for entry in collection.entries() {
            assert!(validate_path(&entry.path).is_ok());
        }
        for dir in collection.dirs() {
            assert!(validate_path(dir).is_ok());
        }
    }
    if let Ok(request) = Request::decode(data) {
        assert_eq!(request.encode(), data);
    }
    if let Some((&len, rest)) = data.split_first() {
        if let Ok(map) = Bitmap::decode(u64::from(len), rest) {
            assert_eq!(map.encode(), rest);
            assert!(map.count() <= map.len());
        }
    }
    if data.len() >= 32 {
        let groups: Vec<[u8; 32]> = data[32..]
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap())
            .collect();
        let size = groups.len() as u64 * 16 * 1024;
        if let Ok(outboard) = Outboard::from_parts(size, groups) {
            let claimed = Hash::from_bytes(data[..32].try_into().unwrap());
            if outboard.verify(claimed).is_ok() {
                assert_eq!(outboard.root(), claimed);
            }
        }
    }
});
