//! Sans-IO content sharing for peerpipe.
//!
//! - [`hash`]: blobs named by their BLAKE3 hash, verified in 16 KiB chunk groups
//!   against an [`hash::Outboard`] of group hashes (a bao tree cut at chunk groups);
//! - [`collection`]: a directory tree as one blob, with strictly validated paths,
//!   and the [`collection::Layout`] that numbers all its groups;
//! - [`bitmap`]: which groups a peer holds;
//! - [`wire`]: the request/response exchange on a share stream;
//! - [`fetch`]: the multi-peer scheduler (throughput-sized requests per peer,
//!   rarest first, stalled and corrupt peers dropped, endgame).
//!
//! No I/O, no clock of its own: the `peerpipe` crate drives it over connections
//! and disk.
//!
//! ```
//! use peerpipe_share::hash::{Hash, Outboard, GROUP_SIZE, group_range};
//!
//! let blob = vec![7u8; 3 * GROUP_SIZE as usize + 10];
//! let outboard = Outboard::of(&blob);
//! // The root is the blob's ordinary BLAKE3 hash; a peer's outboard is checked
//! // against it once, then every group on its own as it arrives.
//! outboard.verify(Hash::of(&blob)).unwrap();
//! let r = group_range(blob.len() as u64, 3);
//! assert!(outboard.verify_group(3, &blob[r.start as usize..r.end as usize]));
//! assert!(!outboard.verify_group(2, &blob[r.start as usize..r.end as usize]));
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bitmap;
pub mod collection;
pub mod fetch;
pub mod hash;
pub mod time;
pub mod wire;
