//! Collections: a directory tree (or a set of files) as one blob.
//!
//! A collection lists, for every file, its path relative to the download
//! directory, its size, its permission bits, its modification time and its blob
//! hash, and the directories that hold no file (so that an empty directory
//! arrives too). It is itself a blob,
//! so its hash names the whole tree and verifies every entry. The encoding is
//! canonical (entries sorted by path, no duplicates), so the same tree always has
//! the same hash.
//!
//! Paths come from peers and are checked strictly on decode ([`validate_path`]): a
//! relative path of `/`-separated, non-empty components, none of them `.` or
//! `..`, no NUL or backslash, and no file that is also a directory of another
//! entry. Links cannot be expressed at all; the receiver must still refuse to
//! write through links it finds in the target directory (the shell does).

use std::collections::HashSet;

use crate::hash::{GROUP_SIZE, Hash, group_count};

const MAGIC: &[u8; 8] = b"ppcoll2\n";
/// The most entries (files and empty directories together) a collection may list.
pub const MAX_ENTRIES: usize = 1 << 20;
/// The longest path an entry may have, in bytes.
pub const MAX_PATH: usize = 4096;
/// The largest encoded collection accepted from a peer.
pub const MAX_ENCODED: u64 = 64 * 1024 * 1024;
/// The most chunk groups a collection may have (256 GiB of content): what a
/// downloader holds per group (32 bytes of outboard, a few bytes of state) stays
/// bounded whatever sizes a peer claims.
pub const MAX_GROUPS: u64 = 1 << 24;

/// One file of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path with `/` separators.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits (at most `0o777`).
    pub mode: u32,
    /// The modification time in whole seconds since the Unix epoch; 0 when
    /// unknown (then the receiver leaves the time of writing).
    pub mtime: u64,
    /// The blob hash of the file's contents.
    pub hash: Hash,
}

/// Why a collection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CollectionError {
    /// Not a collection, or cut short, or with bytes after its end.
    #[error("malformed collection: {0}")]
    Malformed(&'static str),
    /// An entry's path is not a safe relative path.
    #[error("unsafe path {path:?} in collection: {why}")]
    UnsafePath {
        /// The path as given (lossily decoded).
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two entries have the same path, a file is also another entry's
    /// directory, or a directory listed as empty has a file below it.
    #[error("path {0:?} appears twice in the collection")]
    Conflict(String),
    /// Entries are not sorted by path (the encoding is canonical).
    #[error("collection entries are not in order")]
    Order,
    /// A mode has bits beyond the permission bits.
    #[error("mode {0:o} of a collection entry is not a permission mode")]
    Mode(u32),
    /// Too many entries, more than [`MAX_GROUPS`] groups, or a size that overflows.
    #[error("collection too large (at most {MAX_ENTRIES} files and 256 GiB)")]
    TooLarge,
}

/// Checks that `path` is a safe relative path (see the module docs).
pub fn validate_path(path: &str) -> Result<(), CollectionError> {
    let unsafe_path = |why| {
        Err(CollectionError::UnsafePath {
            path: path.to_owned(),
            why,
        })
    };
    if path.is_empty() {
        return unsafe_path("empty");
    }
    if path.len() > MAX_PATH {
        return unsafe_path("too long");
    }
    if path.starts_with('/') {
        return unsafe_path("absolute");
    }
    if path.contains('\0') || path.contains('\\') {
        return unsafe_path("NUL or backslash");
    }
    for component in path.split('/') {
        match component {
            "" => return unsafe_path("empty component"),
            "." | ".." => return unsafe_path("`.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// A validated list of files and empty directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collection {
    entries: Vec<Entry>,
    dirs: Vec<String>,
}

impl Collection {
    /// A collection of `entries` (sorted here); refused when a path is unsafe,
    /// repeated, or a mode is not a permission mode.
    pub fn new(entries: Vec<Entry>) -> Result<Self, CollectionError> {
        Self::with_dirs(entries, Vec::new())
    }

    /// A collection of `entries` and the directories `dirs` that hold no
    /// file (both sorted here); refused as [`Collection::new`] is, and when a
    /// directory is repeated, is also a file or has a file below it.
    pub fn with_dirs(
        mut entries: Vec<Entry>,
        mut dirs: Vec<String>,
    ) -> Result<Self, CollectionError> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        dirs.sort();
        let collection = Self { entries, dirs };
        collection.check()?;
        Ok(collection)
    }

    /// The files, sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The directories that hold no file, sorted.
    pub fn dirs(&self) -> &[String] {
        &self.dirs
    }

    /// The sum of the files' sizes.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    fn check(&self) -> Result<(), CollectionError> {
        if self.entries.len().saturating_add(self.dirs.len()) > MAX_ENTRIES {
            return Err(CollectionError::TooLarge);
        }
        let mut dirs = HashSet::new();
        let mut total: u64 = 0;
        let mut groups: u64 = 0;
        for (i, entry) in self.entries.iter().enumerate() {
            validate_path(&entry.path)?;
            if entry.mode > 0o777 {
                return Err(CollectionError::Mode(entry.mode));
            }
            total = total
                .checked_add(entry.size)
                .ok_or(CollectionError::TooLarge)?;
            groups += group_count(entry.size);
            if groups > MAX_GROUPS {
                return Err(CollectionError::TooLarge);
            }
            if let Some(prev) = i.checked_sub(1).map(|p| &self.entries[p]) {
                match prev.path.cmp(&entry.path) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        return Err(CollectionError::Conflict(entry.path.clone()));
                    }
                    std::cmp::Ordering::Greater => return Err(CollectionError::Order),
                }
            }
            let mut at = 0;
            while let Some(slash) = entry.path[at..].find('/') {
                dirs.insert(&entry.path[..at + slash]);
                at += slash + 1;
            }
        }
        if let Some(e) = self.entries.iter().find(|e| dirs.contains(e.path.as_str())) {
            return Err(CollectionError::Conflict(e.path.clone()));
        }
        self.check_dirs(&dirs)
    }

    /// The empty directories: safe, in order, once each, none a file or the
    /// directory of a file, none below a file.
    fn check_dirs(&self, file_dirs: &HashSet<&str>) -> Result<(), CollectionError> {
        let files: HashSet<&str> = self.entries.iter().map(|e| e.path.as_str()).collect();
        for (i, dir) in self.dirs.iter().enumerate() {
            validate_path(dir)?;
            if let Some(prev) = i.checked_sub(1).map(|p| &self.dirs[p]) {
                match prev.cmp(dir) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        return Err(CollectionError::Conflict(dir.clone()));
                    }
                    std::cmp::Ordering::Greater => return Err(CollectionError::Order),
                }
            }
            if files.contains(dir.as_str()) || file_dirs.contains(dir.as_str()) {
                return Err(CollectionError::Conflict(dir.clone()));
            }
            let mut at = 0;
            while let Some(slash) = dir[at..].find('/') {
                if files.contains(&dir[..at + slash]) {
                    return Err(CollectionError::Conflict(dir[..at + slash].to_owned()));
                }
                at += slash + 1;
            }
        }
        Ok(())
    }

    /// The canonical encoding (its hash names the collection).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.entries.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&(e.path.len() as u16).to_be_bytes());
            out.extend_from_slice(e.path.as_bytes());
            out.extend_from_slice(&e.size.to_be_bytes());
            out.extend_from_slice(&e.mode.to_be_bytes());
            out.extend_from_slice(&e.mtime.to_be_bytes());
            out.extend_from_slice(e.hash.as_bytes());
        }
        out.extend_from_slice(&(self.dirs.len() as u32).to_be_bytes());
        for d in &self.dirs {
            out.extend_from_slice(&(d.len() as u16).to_be_bytes());
            out.extend_from_slice(d.as_bytes());
        }
        out
    }

    /// Decodes and validates a collection received from a peer.
    pub fn decode(mut buf: &[u8]) -> Result<Self, CollectionError> {
        let short = CollectionError::Malformed("cut short");
        if buf.len() as u64 > MAX_ENCODED {
            return Err(CollectionError::TooLarge);
        }
        if take(&mut buf, 8).ok_or(short.clone())? != MAGIC {
            return Err(CollectionError::Malformed("not a collection"));
        }
        let count = u32::from_be_bytes(array(&mut buf).ok_or(short.clone())?) as usize;
        if count > MAX_ENTRIES {
            return Err(CollectionError::TooLarge);
        }
        let mut entries = Vec::with_capacity(count.min(buf.len() / 54));
        for _ in 0..count {
            let path = path_field(&mut buf)?;
            let size = u64::from_be_bytes(array(&mut buf).ok_or(short.clone())?);
            let mode = u32::from_be_bytes(array(&mut buf).ok_or(short.clone())?);
            let mtime = u64::from_be_bytes(array(&mut buf).ok_or(short.clone())?);
            let hash = Hash::from_bytes(array(&mut buf).ok_or(short.clone())?);
            entries.push(Entry {
                path,
                size,
                mode,
                mtime,
                hash,
            });
        }
        let dir_count = u32::from_be_bytes(array(&mut buf).ok_or(short.clone())?) as usize;
        if count.saturating_add(dir_count) > MAX_ENTRIES {
            return Err(CollectionError::TooLarge);
        }
        let mut dirs = Vec::with_capacity(dir_count.min(buf.len() / 3));
        for _ in 0..dir_count {
            dirs.push(path_field(&mut buf)?);
        }
        if !buf.is_empty() {
            return Err(CollectionError::Malformed("bytes after the last entry"));
        }
        let collection = Self { entries, dirs };
        collection.check()?;
        Ok(collection)
    }
}

/// A length-prefixed UTF-8 path (checked later, with the whole collection).
fn path_field(buf: &mut &[u8]) -> Result<String, CollectionError> {
    let short = CollectionError::Malformed("cut short");
    let len = u16::from_be_bytes(array(buf).ok_or(short.clone())?) as usize;
    let raw = take(buf, len).ok_or(short)?;
    std::str::from_utf8(raw)
        .map(str::to_owned)
        .map_err(|_| CollectionError::UnsafePath {
            path: String::from_utf8_lossy(raw).into_owned(),
            why: "not UTF-8",
        })
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Some(head)
}

fn array<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
    take(buf, N).and_then(|b| b.try_into().ok())
}

/// Where each distinct blob of a collection sits in one numbering of chunk groups.
///
/// Downloads, have-bitmaps and requests all speak of *global* group numbers: the
/// distinct blobs of a collection (in entry order, each once) laid end to end,
/// each starting on a group boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    blobs: Vec<BlobSlot>,
    groups: u64,
}

/// One distinct blob in a [`Layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobSlot {
    /// The blob's hash.
    pub hash: Hash,
    /// Its size in bytes.
    pub size: u64,
    /// Its first global group.
    pub first_group: u64,
}

impl BlobSlot {
    /// The number of groups of this blob.
    pub fn groups(&self) -> u64 {
        group_count(self.size)
    }
}

impl Layout {
    /// The layout of `collection`'s distinct blobs.
    pub fn new(collection: &Collection) -> Self {
        let mut seen = HashSet::new();
        let mut blobs = Vec::new();
        let mut groups = 0;
        for e in collection.entries() {
            if seen.insert(e.hash) {
                blobs.push(BlobSlot {
                    hash: e.hash,
                    size: e.size,
                    first_group: groups,
                });
                groups += group_count(e.size);
            }
        }
        Self { blobs, groups }
    }

    /// The distinct blobs, in order.
    pub fn blobs(&self) -> &[BlobSlot] {
        &self.blobs
    }

    /// The number of global groups.
    pub fn groups(&self) -> u64 {
        self.groups
    }

    /// The blob holding global group `group`, and the group's index in that blob.
    pub fn locate(&self, group: u64) -> Option<(usize, u64)> {
        if group >= self.groups {
            return None;
        }
        let i = self.blobs.partition_point(|b| b.first_group <= group) - 1;
        Some((i, group - self.blobs[i].first_group))
    }

    /// The length in bytes of global group `group` (0 past the end).
    pub fn group_len(&self, group: u64) -> u64 {
        self.locate(group).map_or(0, |(blob, local)| {
            let size = self.blobs[blob].size;
            (size - local * GROUP_SIZE).min(GROUP_SIZE)
        })
    }

    /// The total bytes of global groups `range`.
    pub fn range_len(&self, range: std::ops::Range<u64>) -> u64 {
        if range.start >= range.end {
            return 0;
        }
        let full = (range.end - range.start - 1) * GROUP_SIZE;
        // Only the last group of a blob is short; sum exactly when a range spans blobs.
        match (self.locate(range.start), self.locate(range.end - 1)) {
            (Some((a, _)), Some((b, _))) if a == b => full + self.group_len(range.end - 1),
            _ => range.map(|g| self.group_len(g)).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64, fill: u8) -> Entry {
        Entry {
            path: path.into(),
            size,
            mode: 0o644,
            mtime: 1_700_000_000 + u64::from(fill),
            hash: Hash::from_bytes([fill; 32]),
        }
    }

    #[test]
    fn empty_directories_round_trip_and_are_checked() {
        let dirs = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = Collection::with_dirs(vec![entry("a/f", 1, 1)], dirs(&["z/empty", "a/g", "b"]))
            .unwrap();
        assert_eq!(c.dirs(), ["a/g", "b", "z/empty"]);
        let back = Collection::decode(&c.encode()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.entries()[0].mtime, 1_700_000_001);
        for bad in [
            &["a"][..],  // the directory of a file: not empty
            &["a/f"],    // a file
            &["a/f/x"],  // below a file
            &["b", "b"], // twice
            &["../b"],   // unsafe
            &[""],       // empty
        ] {
            assert!(
                Collection::with_dirs(vec![entry("a/f", 1, 1)], dirs(bad)).is_err(),
                "{bad:?}"
            );
        }
        // Decoding refuses dirs out of order (the encoding is canonical).
        let mut raw = Collection::with_dirs(vec![], dirs(&["a", "b"]))
            .unwrap()
            .encode();
        let n = raw.len();
        raw[n - 1] = b'a';
        raw[n - 4] = b'b';
        assert_eq!(Collection::decode(&raw), Err(CollectionError::Order));
    }

    #[test]
    fn round_trips_in_canonical_order() {
        let c = Collection::new(vec![
            entry("b/z.txt", 5, 1),
            entry("a.txt", 0, 2),
            entry("b/a.txt", 70_000, 3),
        ])
        .unwrap();
        let paths: Vec<_> = c.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "b/a.txt", "b/z.txt"]);
        assert_eq!(Collection::decode(&c.encode()).unwrap(), c);
        assert_eq!(c.total_size(), 70_005);
    }

    #[test]
    fn traversal_and_absolute_paths_are_refused() {
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a/",
            "",
            "a\\..\\b",
            "nul\0byte",
            "..",
        ] {
            let err = Collection::new(vec![entry(bad, 1, 1)]).unwrap_err();
            assert!(
                matches!(err, CollectionError::UnsafePath { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn a_decoded_traversal_entry_is_refused() {
        let good = Collection::new(vec![entry("ab/cd", 1, 1)])
            .unwrap()
            .encode();
        let mut evil = good.clone();
        let at = evil.windows(5).position(|w| w == b"ab/cd").unwrap();
        evil[at..at + 5].copy_from_slice(b"../cd");
        assert!(matches!(
            Collection::decode(&evil),
            Err(CollectionError::UnsafePath { .. })
        ));
    }

    #[test]
    fn conflicts_order_and_junk_are_refused() {
        assert!(matches!(
            Collection::new(vec![entry("a", 1, 1), entry("a/b", 1, 2)]),
            Err(CollectionError::Conflict(_))
        ));
        assert!(matches!(
            Collection::new(vec![entry("a", 1, 1), entry("a", 1, 2)]),
            Err(CollectionError::Conflict(_))
        ));
        let mut swapped = Collection::new(vec![entry("a", 1, 1), entry("b", 1, 2)])
            .unwrap()
            .encode();
        let a = swapped.iter().position(|&b| b == b'a').unwrap();
        let b = swapped.iter().position(|&b| b == b'b').unwrap();
        swapped.swap(a, b);
        assert_eq!(Collection::decode(&swapped), Err(CollectionError::Order));
        let mut long = Collection::default().encode();
        long.push(0);
        assert!(matches!(
            Collection::decode(&long),
            Err(CollectionError::Malformed(_))
        ));
        assert!(Collection::decode(b"junk").is_err());
        assert_eq!(
            Collection::new(vec![entry("huge", MAX_GROUPS * GROUP_SIZE + 1, 1)]),
            Err(CollectionError::TooLarge),
            "sizes a downloader could not keep state for"
        );
        let mut bad_mode = entry("x", 1, 1);
        bad_mode.mode = 0o4755;
        assert_eq!(
            Collection::new(vec![bad_mode]),
            Err(CollectionError::Mode(0o4755))
        );
    }

    #[test]
    fn layout_numbers_distinct_blobs_end_to_end() {
        let g = GROUP_SIZE;
        let c = Collection::new(vec![
            entry("a", 2 * g + 1, 1),
            entry("b", 0, 2),
            entry("c", 2 * g + 1, 1),
            entry("d", 10, 3),
        ])
        .unwrap();
        let layout = Layout::new(&c);
        assert_eq!(layout.blobs().len(), 3, "the copy of `a` is one blob");
        assert_eq!(layout.groups(), 4);
        assert_eq!(layout.locate(2), Some((0, 2)));
        assert_eq!(layout.locate(3), Some((2, 0)));
        assert_eq!(layout.locate(4), None);
        assert_eq!(layout.group_len(2), 1);
        assert_eq!(layout.range_len(0..4), 2 * g + 1 + 10);
        assert_eq!(layout.range_len(0..2), 2 * g);
    }
}
