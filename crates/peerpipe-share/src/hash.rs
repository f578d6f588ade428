//! Content hashes and the verified-range tree.
//!
//! A blob is named by its plain BLAKE3 hash. BLAKE3 is itself a tree over 1 KiB
//! chunks; peerpipe cuts blobs into *chunk groups* of [`GROUP_SIZE`] (16 chunks)
//! and keeps, per blob, the chaining value of every group: its [`Outboard`].
//! Because BLAKE3 always splits a subtree at the largest power of two chunks below
//! its size, every group boundary is a subtree boundary, so the root computed from
//! the group chaining values is the blob's ordinary BLAKE3 hash.
//!
//! A receiver first fetches the outboard and checks that it rebuilds the root it
//! asked for ([`Outboard::verify`]); from then on every group is verified on its
//! own as it arrives, from any peer, in any order ([`Outboard::verify_group`]).
//! The outboard costs 32 bytes per 16 KiB (2 MiB per GiB).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use blake3::hazmat::{HasherExt as _, Mode, merge_subtrees_non_root, merge_subtrees_root};

/// Bytes in one chunk group: the unit of requests and verification.
pub const GROUP_SIZE: u64 = 16 * 1024;

/// A BLAKE3 hash: the name of a blob.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash([u8; 32]);

impl Hash {
    /// Wraps 32 hash bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 hash bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash of `data`, in one piece.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..12])
    }
}

/// A hash in text form was not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a hash is 64 hex digits")]
pub struct ParseHashError;

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(ParseHashError);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| ParseHashError)?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| ParseHashError)?;
        }
        Ok(Self(out))
    }
}

/// How many chunk groups a blob of `size` bytes has (none when it is empty).
pub fn group_count(size: u64) -> u64 {
    size.div_ceil(GROUP_SIZE)
}

/// The byte range of group `index` in a blob of `size` bytes.
pub fn group_range(size: u64, index: u64) -> Range<u64> {
    let start = (index * GROUP_SIZE).min(size);
    start..(start + GROUP_SIZE).min(size)
}

/// The chaining value of group `index` of a blob that has `groups` groups.
///
/// A blob of one group has no interior tree: its only "chaining value" is its
/// root hash, which is what this returns then.
pub fn group_hash(groups: u64, index: u64, data: &[u8]) -> [u8; 32] {
    if groups <= 1 {
        return *blake3::hash(data).as_bytes();
    }
    blake3::Hasher::new()
        .set_input_offset(index * GROUP_SIZE)
        .update(data)
        .finalize_non_root()
}

/// Why an outboard or a group did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The outboard has the wrong number of group hashes for the blob's size.
    #[error("{got} group hashes for a blob of {expected} groups")]
    Length {
        /// Group hashes present.
        got: u64,
        /// Group hashes a blob of this size has.
        expected: u64,
    },
    /// The group hashes do not rebuild the expected root hash.
    #[error("the group hashes do not add up to the blob's hash")]
    Root,
}

/// The chaining value of every chunk group of one blob.
#[derive(Clone, PartialEq, Eq)]
pub struct Outboard {
    size: u64,
    groups: Vec<[u8; 32]>,
}

impl fmt::Debug for Outboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outboard")
            .field("size", &self.size)
            .field("groups", &self.groups.len())
            .finish()
    }
}

impl Outboard {
    /// Hashes a blob held in memory.
    pub fn of(data: &[u8]) -> Self {
        let mut hasher = BlobHasher::new();
        hasher.update(data);
        hasher.finish()
    }

    /// An outboard from a blob's size and group hashes, as received from a peer:
    /// check it with [`Outboard::verify`] before trusting it.
    pub fn from_parts(size: u64, groups: Vec<[u8; 32]>) -> Result<Self, VerifyError> {
        let expected = group_count(size);
        if groups.len() as u64 != expected {
            return Err(VerifyError::Length {
                got: groups.len() as u64,
                expected,
            });
        }
        Ok(Self { size, groups })
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The group hashes, in order.
    pub fn groups(&self) -> &[[u8; 32]] {
        &self.groups
    }

    /// The blob's BLAKE3 hash, rebuilt from the group hashes.
    pub fn root(&self) -> Hash {
        root_of(&self.groups)
    }

    /// Checks that the group hashes rebuild `expected`.
    pub fn verify(&self, expected: Hash) -> Result<(), VerifyError> {
        if self.root() == expected {
            Ok(())
        } else {
            Err(VerifyError::Root)
        }
    }

    /// Whether `data` is group `index` of the blob.
    pub fn verify_group(&self, index: u64, data: &[u8]) -> bool {
        let Some(expected) = self.groups.get(index as usize) else {
            return false;
        };
        let range = group_range(self.size, index);
        range.end - range.start == data.len() as u64
            && group_hash(self.groups.len() as u64, index, data) == *expected
    }
}

/// The root hash over a (non-empty or empty) list of group chaining values.
fn root_of(groups: &[[u8; 32]]) -> Hash {
    match groups {
        [] => Hash::of(&[]),
        [only] => Hash(*only),
        _ => {
            let left = largest_power_of_two_below(groups.len());
            let l = subtree(&groups[..left]);
            let r = subtree(&groups[left..]);
            Hash(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
        }
    }
}

fn subtree(groups: &[[u8; 32]]) -> [u8; 32] {
    if let [only] = groups {
        return *only;
    }
    let left = largest_power_of_two_below(groups.len());
    merge_subtrees_non_root(
        &subtree(&groups[..left]),
        &subtree(&groups[left..]),
        Mode::Hash,
    )
}

/// The largest power of two strictly below `n` (n ≥ 2): BLAKE3's left subtree.
fn largest_power_of_two_below(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Builds an [`Outboard`] from a blob fed in pieces of any size.
#[derive(Debug, Clone)]
pub struct BlobHasher {
    size: u64,
    groups: Vec<[u8; 32]>,
    /// The group being filled; a full group is closed only once more data comes,
    /// because a blob of exactly one group hashes differently (as a root).
    current: blake3::Hasher,
    current_len: u64,
}

impl Default for BlobHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BlobHasher {
    /// A hasher for a new blob.
    pub fn new() -> Self {
        Self {
            size: 0,
            groups: Vec::new(),
            current: blake3::Hasher::new(),
            current_len: 0,
        }
    }

    /// Adds the next bytes of the blob.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.current_len == GROUP_SIZE {
                self.groups.push(self.current.finalize_non_root());
                self.current = blake3::Hasher::new();
                self.current
                    .set_input_offset(self.groups.len() as u64 * GROUP_SIZE);
                self.current_len = 0;
            }
            let take = ((GROUP_SIZE - self.current_len) as usize).min(data.len());
            self.current.update(&data[..take]);
            self.current_len += take as u64;
            self.size += take as u64;
            data = &data[take..];
        }
    }

    /// The outboard of everything fed so far.
    pub fn finish(mut self) -> Outboard {
        if self.groups.is_empty() {
            if self.size > 0 {
                self.groups.push(*self.current.finalize().as_bytes());
            }
        } else {
            self.groups.push(self.current.finalize_non_root());
        }
        Outboard {
            size: self.size,
            groups: self.groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect()
    }

    #[test]
    fn roots_are_plain_blake3_at_every_boundary() {
        let g = GROUP_SIZE as usize;
        for len in [
            0,
            1,
            1023,
            1024,
            g - 1,
            g,
            g + 1,
            2 * g,
            3 * g - 5,
            4 * g,
            5 * g + 7,
            17 * g,
            33 * g + 1,
        ] {
            let data = pattern(len);
            let outboard = Outboard::of(&data);
            assert_eq!(outboard.groups().len() as u64, group_count(len as u64));
            assert_eq!(outboard.root(), Hash::of(&data), "len {len}");
            outboard.verify(Hash::of(&data)).unwrap();
        }
    }

    #[test]
    fn piecewise_hashing_matches_one_piece() {
        let data = pattern(7 * GROUP_SIZE as usize + 333);
        let mut hasher = BlobHasher::new();
        for piece in data.chunks(5000) {
            hasher.update(piece);
        }
        assert_eq!(hasher.finish(), Outboard::of(&data));
    }

    #[test]
    fn every_group_verifies_and_a_flipped_bit_does_not() {
        for len in [100, GROUP_SIZE as usize, 6 * GROUP_SIZE as usize + 99] {
            let mut data = pattern(len);
            let outboard = Outboard::of(&data);
            let groups = group_count(len as u64);
            for i in 0..groups {
                let r = group_range(len as u64, i);
                assert!(outboard.verify_group(i, &data[r.start as usize..r.end as usize]));
            }
            let r = group_range(len as u64, groups - 1);
            data[r.start as usize] ^= 1;
            assert!(!outboard.verify_group(groups - 1, &data[r.start as usize..r.end as usize]));
            assert!(!outboard.verify_group(groups, &[]), "no such group");
        }
    }

    #[test]
    fn a_forged_outboard_is_refused() {
        let data = pattern(3 * GROUP_SIZE as usize);
        let hash = Hash::of(&data);
        let mut groups = Outboard::of(&data).groups().to_vec();
        groups[1][0] ^= 1;
        let forged = Outboard::from_parts(data.len() as u64, groups).unwrap();
        assert_eq!(forged.verify(hash), Err(VerifyError::Root));
        assert!(matches!(
            Outboard::from_parts(data.len() as u64, vec![[0; 32]]),
            Err(VerifyError::Length {
                got: 1,
                expected: 3
            })
        ));
    }

    #[test]
    fn hashes_read_back_from_text() {
        let hash = Hash::of(b"abc");
        assert_eq!(hash.to_hex().parse::<Hash>().unwrap(), hash);
        assert!("zz".parse::<Hash>().is_err());
        assert!("g".repeat(64).parse::<Hash>().is_err());
    }
}
