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

    /// Hashes files and directories from disk into a collection this node holds
    /// in full. A file is listed under its name; a directory under its name with
    /// everything below it. Symbolic links and special files are skipped (logged).
    /// Blocking: call it from a blocking thread.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self, ShareError> {
        let mut found = Vec::new();
        for path in paths {
            let meta = std::fs::metadata(path).map_err(|e| ShareError::io(path, e))?;
            let name = path
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .ok_or_else(|| ShareError::Input(format!("{} has no name", path.display())))?;
            if meta.is_dir() {
                walk(path, &name, &mut found)?;
            } else {
                found.push((name, path.clone(), meta));
            }
        }
        let mut entries = Vec::with_capacity(found.len());
        let mut blobs: HashMap<Hash, (Outboard, PathBuf)> = HashMap::new();
        for (name, path, meta) in found {
            let outboard = hash_file(&path, meta.len())?;
            let hash = outboard.root();
            entries.push(Entry {
                path: name,
                size: meta.len(),
                mode: meta.permissions().mode() & 0o777,
                hash,
            });
            blobs.entry(hash).or_insert((outboard, path));
        }
        let collection = Collection::new(entries)?;
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

fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, PathBuf, std::fs::Metadata)>,
) -> Result<(), ShareError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ShareError::io(dir, e))?;
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
            walk(&path, &rel, out)?;
        } else if meta.is_file() {
            out.push((rel, path, meta));
        } else {
            tracing::warn!(
                "skipping {}: not a regular file or directory",
                path.display()
            );
        }
    }
    Ok(())
}

/// The outboard of the file at `path` (`size` bytes), hashed on all cores.
pub(crate) fn hash_file(path: &Path, size: u64) -> Result<Outboard, ShareError> {
    let groups = group_count(size);
    let file = File::open(path).map_err(|e| ShareError::io(path, e))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let per = groups.div_ceil(threads.max(1)).max(1);
    let parts: Vec<Result<Vec<[u8; 32]>, std::io::Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..groups.div_ceil(per))
            .map(|t| {
                let file = &file;
                scope.spawn(move || {
                    let first = t * per;
                    let last = (first + per).min(groups);
                    let mut out = Vec::with_capacity((last - first) as usize);
                    let mut buf = vec![0u8; IO_CHUNK as usize];
                    let mut g = first;
                    while g < last {
                        let run = (last - g).min(IO_CHUNK / GROUP_SIZE);
                        let offset = g * GROUP_SIZE;
                        let len = (size - offset).min(run * GROUP_SIZE) as usize;
                        file.read_exact_at(&mut buf[..len], offset)?;
                        for (i, data) in buf[..len].chunks(GROUP_SIZE as usize).enumerate() {
                            out.push(group_hash(groups, g + i as u64, data));
                        }
                        g += run;
                    }
                    Ok(out)
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
