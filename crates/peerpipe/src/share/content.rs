//! What a node shares: collections, their outboards and where their bytes live.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use peerpipe_share::bitmap::Bitmap;
use peerpipe_share::collection::{Collection, Entry, Layout};
use peerpipe_share::hash::{GROUP_SIZE, Hash, Outboard, group_count, group_hash};

use super::ShareError;
use super::disk::{Chunk, Pool, Writer};

/// Bytes read from or written to disk at a time.
pub(crate) const IO_CHUNK: u64 = 64 * GROUP_SIZE;

/// One shared collection: its encoding, outboards, the files that hold each
/// distinct blob, and which groups of it this node holds (verified).
pub struct Content {
    hash: Hash,
    encoded: Arc<[u8]>,
    collection: Collection,
    layout: Layout,
    outboards: Vec<Outboard>,
    files: RwLock<Vec<PathBuf>>,
    have: RwLock<Bitmap>,
    /// While this node downloads the content: what it is fetching.
    fetching: Mutex<Option<FetchingFn>>,
    uploaded: AtomicU64,
    /// Chunk buffers for reading and receiving.
    pool: Pool,
    writer: Writer,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("hash", &self.hash)
            .field("files", &self.collection.entries().len())
            .field("bytes", &self.collection.total_size())
            .finish_non_exhaustive()
    }
}

/// Tells which groups a running download is fetching.
pub(crate) type FetchingFn = Box<dyn Fn() -> Option<Bitmap> + Send + Sync>;

impl Content {
    pub(crate) fn new(
        collection: Collection,
        outboards: Vec<Outboard>,
        files: Vec<PathBuf>,
        have: Bitmap,
    ) -> Self {
        let encoded: Arc<[u8]> = collection.encode().into();
        let layout = Layout::new(&collection);
        Self {
            hash: Hash::of(&encoded),
            encoded,
            collection,
            layout,
            outboards,
            files: RwLock::new(files),
            have: RwLock::new(have),
            fetching: Mutex::new(None),
            uploaded: AtomicU64::new(0),
            pool: Pool::default(),
            writer: Writer::default(),
        }
    }

    /// Checks, without hashing, what [`Content::from_paths`] would refuse or
    /// fail on: a path that is missing or unreadable, a file in a directory that
    /// cannot be opened, two files that would arrive under one name. Quick
    /// (metadata and an open per file), for a sender to run before it hands out
    /// a code.
    pub fn check_paths(paths: &[PathBuf]) -> Result<(), ShareError> {
        let (found, _) = scan(paths)?;
        let mut names: Vec<(&str, &Path)> = found
            .iter()
            .map(|(name, path, _)| (name.as_str(), path.as_path()))
            .collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ShareError::Input(format!(
                "{} and {} would both arrive as {}: send them from different directories, or one at a time",
                pair[0].1.display(),
                pair[1].1.display(),
                pair[0].0
            )));
        }
        for (_, path, _) in &found {
            File::open(path).map_err(|e| ShareError::io(path, e))?;
        }
        Ok(())
    }

    /// Hashes files and directories from disk into a collection this node holds
    /// in full. A file is listed under its name; a directory under its name with
    /// everything below it. Symbolic links and special files are skipped (logged).
    /// Blocking: call it from a blocking thread.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self, ShareError> {
        let (found, dirs) = scan(paths)?;
        let outboards = hash_all(&found)?;
        let mut entries = Vec::with_capacity(found.len());
        let mut blobs: HashMap<Hash, (Outboard, PathBuf)> = HashMap::new();
        for ((name, path, meta), outboard) in found.into_iter().zip(outboards) {
            let hash = outboard.root();
            entries.push(Entry {
                path: name,
                size: meta.len(),
                mode: meta.permissions().mode() & 0o777,
                mtime: mtime_of(&meta),
                hash,
            });
            blobs.entry(hash).or_insert((outboard, path));
        }
        let collection = Collection::with_dirs(entries, dirs)?;
        let layout = Layout::new(&collection);
        let (outboards, files) = layout
            .blobs()
            .iter()
            .filter_map(|b| blobs.remove(&b.hash))
            .unzip();
        Ok(Self::new(
            collection,
            outboards,
            files,
            Bitmap::full(layout.groups()),
        ))
    }

    /// The collection's hash: what tickets and codes name.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// The files it lists.
    pub fn collection(&self) -> &Collection {
        &self.collection
    }

    /// The global group numbering.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn encoded(&self) -> &Arc<[u8]> {
        &self.encoded
    }

    pub(crate) fn outboards(&self) -> &[Outboard] {
        &self.outboards
    }

    /// Bytes served to peers so far.
    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }

    pub(crate) fn add_uploaded(&self, n: u64) {
        self.uploaded.fetch_add(n, Ordering::Relaxed);
    }

    /// A copy of the have-bitmap.
    pub fn have(&self) -> Bitmap {
        self.have
            .read()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The groups this node is fetching (none once it holds everything).
    pub(crate) fn fetching(&self) -> Bitmap {
        self.fetching
            .lock()
            .ok()
            .and_then(|f| f.as_ref().and_then(|f| f()))
            .unwrap_or_else(|| Bitmap::new(self.layout.groups()))
    }

    pub(crate) fn set_fetching(&self, source: FetchingFn) {
        if let Ok(mut f) = self.fetching.lock() {
            *f = Some(source);
        }
    }

    pub(crate) fn holds(&self, range: std::ops::Range<u64>) -> bool {
        self.have
            .read()
            .map(|h| h.all(range.clone()))
            .unwrap_or(false)
    }

    pub(crate) fn mark(&self, groups: impl Iterator<Item = u64>) {
        if let Ok(mut have) = self.have.write() {
            for g in groups {
                have.set(g);
            }
        }
    }

    pub(crate) fn file_of(&self, blob: usize) -> Option<PathBuf> {
        self.files.read().ok().and_then(|f| f.get(blob).cloned())
    }

    pub(crate) fn set_file(&self, blob: usize, path: PathBuf) {
        if let Ok(mut files) = self.files.write()
            && let Some(slot) = files.get_mut(blob)
        {
            *slot = path;
        }
    }

    /// Reads global groups `start..end` (at most [`IO_CHUNK`] bytes) from disk
    /// into a pooled buffer (hand it back with [`Content::recycle`]). Blocking.
    pub(crate) fn read_groups(&self, start: u64, end: u64) -> Result<Chunk, ShareError> {
        let mut chunk = self.chunk(self.layout.range_len(start..end));
        let out = chunk.bytes_mut();
        let mut at = 0;
        let mut g = start;
        while g < end && at < out.len() {
            let Some((blob, local)) = self.layout.locate(g) else {
                break;
            };
            let slot = self.layout.blobs()[blob];
            let run = (end - g).min(slot.groups() - local);
            let offset = local * GROUP_SIZE;
            let len = ((slot.size - offset).min(run * GROUP_SIZE) as usize).min(out.len() - at);
            let path = self
                .file_of(blob)
                .ok_or_else(|| ShareError::Input("no file for a blob".into()))?;
            let file = File::open(&path).map_err(|e| ShareError::io(&path, e))?;
            file.read_exact_at(&mut out[at..at + len], offset)
                .map_err(|e| ShareError::io(&path, e))?;
            at += len;
            g += run;
        }
        Ok(chunk)
    }

    /// A buffer of `len` bytes (at most [`IO_CHUNK`]) from this content's pool.
    pub(crate) fn chunk(&self, len: u64) -> Chunk {
        self.pool.take(len.min(IO_CHUNK) as usize)
    }

    /// Hands a buffer back to the pool.
    pub(crate) fn recycle(&self, chunk: Chunk) {
        self.pool.give(chunk);
    }

    /// Writes `data` at `offset` of `path`, past the page cache where possible.
    pub(crate) fn write_at(&self, path: &Path, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.writer.write_at(path, data, offset)
    }
}

/// Every file under `paths` with the name it arrives under.
/// Whole seconds since the Unix epoch `meta` was last modified at; 0 when the
/// file system keeps no time or it is before 1970.
fn mtime_of(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// The files found under `paths` (name, path, metadata), and the directories
/// that hold none (which arrive as empty directories).
type Found = (Vec<(String, PathBuf, std::fs::Metadata)>, Vec<String>);

fn scan(paths: &[PathBuf]) -> Result<Found, ShareError> {
    let mut found = Vec::new();
    let mut empty = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| ShareError::io(path, e))?;
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| ShareError::Input(format!("{} has no name", path.display())))?;
        if meta.is_dir() {
            walk(path, &name, &mut found, &mut empty)?;
        } else {
            found.push((name, path.clone(), meta));
        }
    }
    Ok((found, empty))
}

/// Lists the files below `dir` into `out` and the directories below it (itself
/// included) that hold no file into `empty`.
fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, PathBuf, std::fs::Metadata)>,
    empty: &mut Vec<String>,
) -> Result<(), ShareError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ShareError::io(dir, e))?;
    let files_before = out.len();
    let empty_before = empty.len();
    for entry in entries {
        let entry = entry.map_err(|e| ShareError::io(dir, e))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| ShareError::io(&path, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!("skipping {}: its name is not UTF-8", path.display());
            continue;
        };
        let rel = format!("{prefix}/{name}");
        if meta.is_dir() {
            walk(&path, &rel, out, empty)?;
        } else if meta.is_file() {
            out.push((rel, path, meta));
        } else {
            tracing::warn!(
                "skipping {}: not a regular file or directory",
                path.display()
            );
        }
    }
    // A directory that holds only empty ones is listed by them.
    if out.len() == files_before && empty.len() == empty_before {
        empty.push(prefix.to_owned());
    }
    Ok(())
}

/// Files up to this size are hashed whole by one thread; larger ones are split
/// across all cores.
const SPLIT_ABOVE: u64 = 4 * IO_CHUNK;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The outboard of the file at `path` (`size` bytes), hashed on all cores.
pub(crate) fn hash_file(path: &Path, size: u64) -> Result<Outboard, ShareError> {
    let groups = group_count(size);
    let file = File::open(path).map_err(|e| ShareError::io(path, e))?;
    let per = groups.div_ceil(cores() as u64).max(1);
    let parts: Vec<Result<Vec<[u8; 32]>, std::io::Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..groups.div_ceil(per))
            .map(|t| {
                let file = &file;
                scope.spawn(move || {
                    let first = t * per;
                    hash_groups(
                        file,
                        size,
                        first..(first + per).min(groups),
                        &mut Vec::new(),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("hashing thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(groups as usize);
    for part in parts {
        all.extend(part.map_err(|e| ShareError::io(path, e))?);
    }
    Outboard::from_parts(size, all).map_err(|e| ShareError::Input(e.to_string()))
}

/// The outboard of a small file, on this thread, reading through `buf`.
fn hash_small(path: &Path, size: u64, buf: &mut Vec<u8>) -> Result<Outboard, ShareError> {
    let file = File::open(path).map_err(|e| ShareError::io(path, e))?;
    let groups =
        hash_groups(&file, size, 0..group_count(size), buf).map_err(|e| ShareError::io(path, e))?;
    Outboard::from_parts(size, groups).map_err(|e| ShareError::Input(e.to_string()))
}

/// The hashes of groups `range` of `file` (`size` bytes), read in pieces of
/// up to [`IO_CHUNK`] through `buf` (grown as needed, kept for the next call).
fn hash_groups(
    file: &File,
    size: u64,
    range: std::ops::Range<u64>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Vec<[u8; 32]>> {
    let groups = group_count(size);
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut g = range.start;
    while g < range.end {
        let run = (range.end - g).min(IO_CHUNK / GROUP_SIZE);
        let offset = g * GROUP_SIZE;
        let len = (size - offset).min(run * GROUP_SIZE) as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        file.read_exact_at(&mut buf[..len], offset)?;
        for (i, data) in buf[..len].chunks(GROUP_SIZE as usize).enumerate() {
            out.push(group_hash(groups, g + i as u64, data));
        }
        g += run;
    }
    Ok(out)
}

/// The outboards of many files: large ones one at a time on all cores, small
/// ones side by side, one per core.
fn hash_all(files: &[(String, PathBuf, std::fs::Metadata)]) -> Result<Vec<Outboard>, ShareError> {
    let mut done: Vec<Option<Outboard>> = vec![None; files.len()];
    for ((_, path, meta), slot) in files.iter().zip(&mut done) {
        if meta.len() > SPLIT_ABOVE {
            *slot = Some(hash_file(path, meta.len())?);
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let small = || -> Result<Vec<(usize, Outboard)>, ShareError> {
        let mut buf = Vec::new();
        let mut mine = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((_, path, meta)) = files.get(i) else {
                return Ok(mine);
            };
            if meta.len() <= SPLIT_ABOVE {
                mine.push((i, hash_small(path, meta.len(), &mut buf)?));
            }
        }
    };
    let parts: Vec<Result<Vec<(usize, Outboard)>, ShareError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cores().min(files.len()).max(1))
            .map(|_| scope.spawn(small))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(ShareError::Input("a hashing thread panicked".into())))
            })
            .collect()
    });
    for part in parts {
        for (i, outboard) in part? {
            done[i] = Some(outboard);
        }
    }
    done.into_iter()
        .map(|o| o.ok_or_else(|| ShareError::Input("a file was not hashed".into())))
        .collect()
}

/// The collections a node serves, by hash.
#[derive(Debug, Clone, Default)]
pub struct Library {
    inner: Arc<Mutex<HashMap<Hash, Arc<Content>>>>,
}

impl Library {
    /// An empty library.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `content` from now on.
    pub fn add(&self, content: Arc<Content>) {
        if let Ok(mut map) = self.inner.lock() {
            map.insert(content.hash(), content);
        }
    }

    /// The content named `hash`, if served.
    pub fn get(&self, hash: &Hash) -> Option<Arc<Content>> {
        self.inner.lock().ok().and_then(|m| m.get(hash).cloned())
    }
}
