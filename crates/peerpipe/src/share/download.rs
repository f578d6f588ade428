//! Fetching a collection from every peer that has it, verified, to disk.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerpipe_share::bitmap::Bitmap;
use peerpipe_share::collection::{Collection, Layout, MAX_ENCODED};
use peerpipe_share::fetch::{self, Fetch, Received};
use peerpipe_share::hash::{GROUP_SIZE, Hash, Outboard, group_range};
use peerpipe_share::wire::{Request, Status};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::AbortHandle;

use super::ShareError;
use super::content::{Content, IO_CHUNK, Library, hash_file};
use crate::Connection;

/// How a download behaves.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// The directory the collection's files land in.
    pub out: PathBuf,
    /// Replace existing files that differ (otherwise the download is refused).
    pub force: bool,
    /// Where among equally rare groups to start; `None` picks a random place, so
    /// that several downloaders fetch different parts from a seed.
    pub cursor: Option<u64>,
    /// Scheduler tuning.
    pub fetch: fetch::Config,
    /// How often to ask peers that are still downloading what they hold (for
    /// collections up to 512 MiB; larger ones are asked less often, in
    /// proportion to the size of the answer).
    pub have_interval: Duration,
    /// Time limit of one metadata request (collection, outboards, have).
    pub request_timeout: Duration,
    /// Give up when no peer is left for this long while data is missing.
    pub no_source_timeout: Duration,
    /// Wait for [`Download::proceed`] once the collection is known and the
    /// targets are checked (existing files that differ refuse the download
    /// then), before anything is written or any file data is asked for; see
    /// [`Download::offered`]. Dropping the [`Download`] while it waits ends it.
    pub confirm: bool,
}

impl DownloadOptions {
    /// Defaults for a download into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            force: false,
            cursor: None,
            fetch: fetch::Config::default(),
            have_interval: Duration::from_millis(50),
            request_timeout: Duration::from_secs(30),
            no_source_timeout: Duration::from_secs(30),
            confirm: false,
        }
    }
}

/// What a finished download did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Bytes of the collection.
    pub total_bytes: u64,
    /// Groups found verified on disk at the start (a resumed download).
    pub reused_groups: u64,
    /// Groups missing at the start.
    pub missing_groups: u64,
    /// Groups asked from peers, counting endgame copies.
    pub requested_groups: u64,
    /// Fresh bytes received (verified, not counting endgame copies).
    pub fetched_bytes: u64,
    /// Peers dropped for data that failed verification or for stalling.
    pub dropped_peers: Vec<crate::DeviceId>,
    /// Where the files are.
    pub files: Vec<PathBuf>,
}

/// Progress of one file of the collection.
#[derive(Debug, Clone)]
pub struct FileProgress {
    /// The path inside the collection.
    pub path: String,
    /// Verified bytes.
    pub done: u64,
    /// Its size.
    pub size: u64,
}

struct Source {
    conn: Connection,
}

struct Shared {
    fetch: Mutex<Option<Fetch<u64>>>,
    content: Mutex<Option<Arc<Content>>>,
    tasks: Mutex<HashMap<u64, AbortHandle>>,
    notify: Notify,
    requested: std::sync::atomic::AtomicU64,
    /// Writing failed (the disk is full, say): the download ends with this.
    failed: Mutex<Option<ShareError>>,
}

/// A running download; add sources with [`Download::add_source`], wait with
/// [`Download::finish`].
pub struct Download {
    hash: Hash,
    sources: mpsc::UnboundedSender<Connection>,
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<Result<Report, ShareError>>>>,
    /// The collection, once known and its targets checked.
    offered: watch::Receiver<Option<Arc<Collection>>>,
    /// Set by [`Download::proceed`].
    proceed: watch::Sender<bool>,
    /// Bytes still to write into the output's filesystem, set with `offered`.
    to_write: Arc<AtomicU64>,
}

/// The two ends of a [`DownloadOptions::confirm`] gate, inside the download's task.
struct Gate {
    offered: watch::Sender<Option<Arc<Collection>>>,
    proceed: watch::Receiver<bool>,
    to_write: Arc<AtomicU64>,
}

impl Download {
    /// Starts fetching the collection `hash` into `options.out`. While it runs
    /// (and after), `library` serves what it holds to other peers.
    pub fn start(hash: Hash, options: DownloadOptions, library: Library) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            fetch: Mutex::new(None),
            content: Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
            notify: Notify::new(),
            requested: 0.into(),
            failed: Mutex::new(None),
        });
        let (offered_tx, offered) = watch::channel(None);
        let (proceed, proceed_rx) = watch::channel(false);
        let to_write = Arc::new(AtomicU64::new(0));
        let gate = Gate {
            offered: offered_tx,
            proceed: proceed_rx,
            to_write: to_write.clone(),
        };
        let task = tokio::spawn(run(hash, options, library, rx, shared.clone(), gate));
        Self {
            hash,
            sources: tx,
            shared,
            task: Mutex::new(Some(task)),
            offered,
            proceed,
            to_write,
        }
    }

    /// Waits until the collection is known and its targets are checked: what
    /// is coming, to show before [`Download::proceed`] (with
    /// [`DownloadOptions::confirm`]). `None` if the download ended first:
    /// [`Download::finish`] tells why.
    pub async fn offered(&self) -> Option<Arc<Collection>> {
        let mut rx = self.offered.clone();
        let known = rx.wait_for(Option::is_some).await.ok()?;
        known.clone()
    }

    /// Bytes the download still has to write below [`DownloadOptions::out`],
    /// once [`Download::offered`] returned: the files neither in place already
    /// nor verified in the partial data of an earlier attempt, and the copies
    /// of files the collection lists more than once. For a free-space check
    /// before [`Download::proceed`].
    pub fn to_write(&self) -> Option<u64> {
        self.offered
            .borrow()
            .is_some()
            .then(|| self.to_write.load(Ordering::Acquire))
    }

    /// Lets a download started with [`DownloadOptions::confirm`] go on past
    /// [`Download::offered`]. Without `confirm` it does nothing.
    pub fn proceed(&self) {
        self.proceed.send_replace(true);
    }

    /// The collection being fetched.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Fetches from `conn`'s peer too (if it has the collection).
    pub fn add_source(&self, conn: Connection) {
        let _ = self.sources.send(conn);
    }

    /// The collection, once it was fetched and verified.
    pub fn content(&self) -> Option<Arc<Content>> {
        self.shared.content.lock().ok().and_then(|c| c.clone())
    }

    /// Verified and total bytes, once the collection is known.
    pub fn progress(&self) -> Option<(u64, u64)> {
        let content = self.content()?;
        let have = content.have();
        let layout = content.layout();
        let done = have.ones().map(|g| layout.group_len(g)).sum();
        Some((done, layout.range_len(0..layout.groups())))
    }

    /// Per-file progress, once the collection is known.
    pub fn files(&self) -> Vec<FileProgress> {
        let Some(content) = self.content() else {
            return Vec::new();
        };
        let have = content.have();
        let layout = content.layout();
        let mut per_blob = vec![0u64; layout.blobs().len()];
        let mut blob = 0;
        for g in have.ones() {
            while layout.blobs()[blob].first_group + layout.blobs()[blob].groups() <= g {
                blob += 1;
            }
            per_blob[blob] += layout.group_len(g);
        }
        let index: HashMap<Hash, usize> = layout
            .blobs()
            .iter()
            .enumerate()
            .map(|(i, b)| (b.hash, i))
            .collect();
        content
            .collection()
            .entries()
            .iter()
            .map(|e| FileProgress {
                path: e.path.clone(),
                done: index.get(&e.hash).map_or(0, |&i| per_blob[i]),
                size: e.size,
            })
            .collect()
    }

    /// Whether the download ended (complete or failed): [`Download::finish`]
    /// then returns at once.
    pub fn is_finished(&self) -> bool {
        self.task
            .lock()
            .ok()
            .is_none_or(|t| t.as_ref().is_none_or(|t| t.is_finished()))
    }

    /// Waits until every file is verified and in place. Only the first call
    /// gets the report; later ones get [`ShareError::Protocol`].
    pub async fn finish(&self) -> Result<Report, ShareError> {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        match task {
            Some(task) => task
                .await
                .unwrap_or(Err(ShareError::Protocol("the download task failed"))),
            None => Err(ShareError::Protocol("the download was already waited for")),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.values() {
                t.abort();
            }
        }
    }
}

async fn run(
    hash: Hash,
    options: DownloadOptions,
    library: Library,
    mut incoming: mpsc::UnboundedReceiver<Connection>,
    shared: Arc<Shared>,
    mut gate: Gate,
) -> Result<Report, ShareError> {
    let mut sources: HashMap<u64, Source> = HashMap::new();
    // 1. The collection and its outboards, from the first source that has them;
    // the others stay: they may fetch the collection themselves and reshare.
    let (collection, outboards, first_have) = loop {
        let conn = tokio::time::timeout(options.no_source_timeout, incoming.recv())
            .await
            .map_err(|_| ShareError::NoSource)?
            .ok_or(ShareError::NoSource)?;
        let found = metadata(&conn, hash, options.request_timeout).await;
        let key = sources.len() as u64;
        match found {
            Ok(found) => {
                sources.insert(key, Source { conn });
                let have = found.have.map(|have| (key, have));
                break (found.collection, found.outboards, have);
            }
            Err(ShareError::NotFound) => {
                sources.insert(key, Source { conn });
            }
            // The collection matched its hash: it is unsafe whoever serves it.
            Err(e @ ShareError::Collection(_)) => return Err(e),
            Err(e) => tracing::info!("{} cannot provide {hash}: {e}", conn.peer().id),
        }
    };
    let mut next_key = sources.len() as u64;
    let layout = Layout::new(&collection);
    // 2. Targets and what is on disk already: checked (read only), then,
    // once the caller lets the download go on, prepared.
    let targets = plan_targets(&options, &collection)?;
    let dirs = plan_dirs(&options, &collection)?;
    let force = options.force;
    let held = {
        let (collection, targets) = (collection.clone(), targets.clone());
        tokio::task::spawn_blocking(move || held_targets(&collection, &targets, force))
            .await
            .map_err(|_| ShareError::Protocol("checking the existing files failed"))??
    };
    let partial = options
        .out
        .join(format!(".peerpipe-{}.partial", &hash.to_hex()[..16]));
    gate.to_write.store(
        to_write(&collection, &targets, &held, &partial),
        Ordering::Release,
    );
    gate.offered
        .send_replace(Some(Arc::new(collection.clone())));
    if options.confirm {
        gate.proceed
            .wait_for(|&go| go)
            .await
            .map_err(|_| ShareError::Cancelled)?;
    }
    let (files, done) = {
        let (outboards, partial) = (outboards.clone(), partial.clone());
        let layout = layout.clone();
        tokio::task::spawn_blocking(move || prepare(&layout, &outboards, &held, &partial))
            .await
            .map_err(|_| ShareError::Protocol("preparing the download failed"))??
    };
    let reused = done.count();
    let missing = layout.groups() - reused;
    let reused_bytes: u64 = done.ones().map(|g| layout.group_len(g)).sum();
    let content = Arc::new(Content::new(
        collection.clone(),
        outboards,
        files,
        done.clone(),
    ));
    let weak = Arc::downgrade(&shared);
    content.set_fetching(Box::new(move || {
        let shared = weak.upgrade()?;
        let fetch = shared.fetch.lock().ok()?;
        fetch.as_ref().map(Fetch::fetching)
    }));
    library.add(content.clone());
    if let Ok(mut c) = shared.content.lock() {
        *c = Some(content.clone());
    }
    let cursor = options.cursor.unwrap_or_else(rand::random);
    if let Ok(mut f) = shared.fetch.lock() {
        let mut fetch = Fetch::new(layout.clone(), done, cursor, options.fetch.clone());
        for &key in sources.keys() {
            fetch.add_peer(key);
        }
        if let Some((key, (have, fetching))) = &first_have {
            fetch.handle_have(*key, have, fetching);
        }
        *f = Some(fetch);
    }
    for (&key, source) in &sources {
        // What the metadata source held came with the metadata: a seed is
        // not asked again, a partial holder only after the usual pause.
        let told = first_have.as_ref().filter(|(k, _)| *k == key);
        if told.is_some_and(|(_, (have, _))| have.is_full()) {
            continue;
        }
        let conn = source.conn.clone();
        spawn_have_poll(key, conn, hash, &options, &shared, told.is_some());
    }
    // 3. Schedule until complete.
    let mut dropped = Vec::new();
    let mut last_source = Instant::now();
    loop {
        if let Some(e) = shared.failed.lock().ok().and_then(|mut f| f.take()) {
            let ids: Vec<u64> = shared
                .tasks
                .lock()
                .map(|t| t.keys().copied().collect())
                .unwrap_or_default();
            abort(&shared, &ids);
            return Err(e);
        }
        let mut to_start = Vec::new();
        let (complete, peers, stalled) = {
            let mut guard = shared
                .fetch
                .lock()
                .map_err(|_| ShareError::Protocol("lock"))?;
            let fetch = guard.as_mut().ok_or(ShareError::Protocol("no scheduler"))?;
            let now = Instant::now();
            // A source whose connection ended is gone (it may come back as a
            // new connection); its requests go to the others.
            let gone: Vec<u64> = sources
                .iter()
                .filter(|(_, s)| s.conn.close_reason().is_some())
                .map(|(&key, _)| key)
                .collect();
            for key in gone {
                let ids = fetch.remove_peer(key);
                abort(&shared, &ids);
                sources.remove(&key);
            }
            for (&key, source) in &sources {
                fetch.set_rtt(key, source.conn.rtt());
            }
            let stalled = fetch.poll_stalled(now);
            while let Some(r) = fetch.poll_request(now) {
                to_start.push(r);
            }
            (fetch.is_complete(), fetch.peers().count(), stalled)
        };
        for (peer, ids) in stalled {
            tracing::warn!("dropping a share source that stalled");
            abort(&shared, &ids);
            if let Some(s) = sources.get(&peer) {
                dropped.push(s.conn.peer().id);
            }
        }
        for r in to_start {
            if let Some(source) = sources.get(&r.peer) {
                shared
                    .requested
                    .fetch_add(r.end - r.start, std::sync::atomic::Ordering::Relaxed);
                let task = tokio::spawn(fetch_range(
                    source.conn.clone(),
                    hash,
                    r,
                    content.clone(),
                    shared.clone(),
                ));
                if let Ok(mut tasks) = shared.tasks.lock() {
                    tasks.insert(r.id, task.abort_handle());
                }
            }
        }
        if complete {
            break;
        }
        if peers > 0 {
            last_source = Instant::now();
        } else if last_source.elapsed() > options.no_source_timeout {
            return Err(ShareError::NoSource);
        }
        tokio::select! {
            conn = incoming.recv() => {
                let Some(conn) = conn else { continue };
                let key = next_key;
                next_key += 1;
                if let Ok(mut f) = shared.fetch.lock() && let Some(fetch) = f.as_mut() {
                    fetch.add_peer(key);
                }
                spawn_have_poll(key, conn.clone(), hash, &options, &shared, false);
                sources.insert(key, Source { conn });
            }
            () = shared.notify.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        collect_dropped(&shared, &sources, &mut dropped);
    }
    collect_dropped(&shared, &sources, &mut dropped);
    // 4. Files into place.
    let placed = {
        let content = content.clone();
        let targets = targets.clone();
        tokio::task::spawn_blocking(move || finalize(&content, &targets, &dirs, &partial))
            .await
            .map_err(|_| ShareError::Protocol("finishing the download failed"))??
    };
    Ok(Report {
        total_bytes: collection.total_size(),
        reused_groups: reused,
        missing_groups: missing,
        requested_groups: shared.requested.load(std::sync::atomic::Ordering::Relaxed),
        fetched_bytes: layout.range_len(0..layout.groups()) - reused_bytes,
        dropped_peers: dropped,
        files: placed,
    })
}

fn collect_dropped(
    shared: &Shared,
    sources: &HashMap<u64, Source>,
    dropped: &mut Vec<crate::DeviceId>,
) {
    let Ok(guard) = shared.fetch.lock() else {
        return;
    };
    let Some(fetch) = guard.as_ref() else { return };
    for (&key, s) in sources {
        let id = s.conn.peer().id;
        if fetch.is_dropped(key) && !dropped.contains(&id) {
            dropped.push(id);
        }
    }
}

fn abort(shared: &Shared, ids: &[u64]) {
    if let Ok(mut tasks) = shared.tasks.lock() {
        for id in ids {
            if let Some(t) = tasks.remove(id) {
                t.abort();
            }
        }
    }
}

/// Opens a stream, sends `request`, and reads the status byte.
pub(crate) async fn ask(conn: &Connection, request: Request) -> Result<crate::Stream, ShareError> {
    let mut stream = request_on(conn, request).await?;
    status(&mut stream).await?;
    Ok(stream)
}

/// Opens a stream and sends `request` on it, without waiting for the answer
/// (several requests in one round trip).
async fn request_on(conn: &Connection, request: Request) -> Result<crate::Stream, ShareError> {
    let mut stream = conn.open_stream().await?;
    stream.write_all(&request.encode()).await?;
    stream.finish()?;
    Ok(stream)
}

/// Reads an answer's status byte: `Ok`, or the error it names.
async fn status(stream: &mut crate::Stream) -> Result<(), ShareError> {
    match Status::from_byte(stream.read_u8().await?) {
        Some(Status::Ok) => Ok(()),
        Some(Status::NotFound) => Err(ShareError::NotFound),
        Some(Status::NotHeld) => Err(ShareError::NotHeld),
        None => Err(ShareError::Protocol("unknown status")),
    }
}

/// Reads a have answer for `groups` groups: what the peer holds, and what
/// it is fetching.
async fn read_have(
    stream: &mut crate::Stream,
    groups: u64,
) -> Result<(Bitmap, Bitmap), ShareError> {
    let bytes = groups.div_ceil(8) as usize;
    let mut raw = vec![0u8; 2 * bytes];
    stream.read_exact(&mut raw).await?;
    let bad = |_| ShareError::Protocol("bad have-bitmap");
    let (have, fetching) = raw.split_at(bytes);
    Ok((
        Bitmap::decode(groups, have).map_err(bad)?,
        Bitmap::decode(groups, fetching).map_err(bad)?,
    ))
}

/// Exactly `len` bytes from `stream`. Memory grows only as the peer sends (not
/// zeroed ahead, and not sized by what a peer claimed).
async fn read_len(stream: &mut crate::Stream, len: u64) -> Result<Vec<u8>, ShareError> {
    let mut buf = Vec::with_capacity(len.min(IO_CHUNK) as usize);
    stream.take(len).read_to_end(&mut buf).await?;
    if buf.len() as u64 == len {
        Ok(buf)
    } else {
        Err(ShareError::Protocol("the peer ended its answer early"))
    }
}

/// What a source tells of a collection before any data: the collection, its
/// outboards (both verified), and what the source holds of it.
pub(crate) struct Metadata {
    pub collection: Collection,
    pub outboards: Vec<Outboard>,
    /// What the source holds and is fetching; `None` if it could not say.
    pub have: Option<(Bitmap, Bitmap)>,
}

/// The verified collection and outboards from `conn`'s peer, and what it
/// holds: the three requests go out at once, so they cost one round trip.
pub(crate) async fn metadata(
    conn: &Connection,
    hash: Hash,
    limit: Duration,
) -> Result<Metadata, ShareError> {
    let work = async {
        let mut collection_stream = request_on(conn, Request::Collection(hash)).await?;
        let mut outboard_stream = request_on(conn, Request::Outboards(hash)).await?;
        let mut have_stream = request_on(conn, Request::Have(hash)).await?;
        let stream = &mut collection_stream;
        status(stream).await?;
        let len = stream.read_u64().await?;
        if len > MAX_ENCODED {
            return Err(ShareError::Protocol("collection too large"));
        }
        let encoded = read_len(stream, len).await?;
        if Hash::of(&encoded) != hash {
            return Err(ShareError::Corrupt);
        }
        let collection = Collection::decode(&encoded)?;
        let layout = Layout::new(&collection);
        let stream = &mut outboard_stream;
        status(stream).await?;
        let mut outboards = Vec::with_capacity(layout.blobs().len());
        for blob in layout.blobs() {
            let raw = read_len(stream, blob.groups() * 32).await?;
            let groups = raw
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap_or([0; 32]))
                .collect();
            let outboard =
                Outboard::from_parts(blob.size, groups).map_err(|_| ShareError::Corrupt)?;
            outboard
                .verify(blob.hash)
                .map_err(|_| ShareError::Corrupt)?;
            outboards.push(outboard);
        }
        // A source that cannot say what it holds is asked again by the poll.
        let have = match status(&mut have_stream).await {
            Ok(()) => read_have(&mut have_stream, layout.groups()).await.ok(),
            Err(_) => None,
        };
        Ok(Metadata {
            collection,
            outboards,
            have,
        })
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| ShareError::Timeout("the collection's metadata"))?
}

fn spawn_have_poll(
    key: u64,
    conn: Connection,
    hash: Hash,
    options: &DownloadOptions,
    shared: &Arc<Shared>,
    mut pause_first: bool,
) {
    let shared = shared.clone();
    let interval = options.have_interval;
    let limit = options.request_timeout;
    tokio::spawn(async move {
        loop {
            let groups = match shared.fetch.lock() {
                Ok(f) => match f.as_ref() {
                    Some(fetch) if !fetch.is_complete() && !fetch.is_dropped(key) => {
                        fetch.done().len()
                    }
                    _ => return,
                },
                Err(_) => return,
            };
            if std::mem::take(&mut pause_first) {
                tokio::time::sleep(have_pause(interval, groups)).await;
                continue;
            }
            let have = tokio::time::timeout(limit, async {
                let mut stream = ask(&conn, Request::Have(hash)).await?;
                read_have(&mut stream, groups).await
            })
            .await;
            match have {
                Ok(Ok((have, fetching))) => {
                    let full = have.is_full();
                    if let Ok(mut f) = shared.fetch.lock()
                        && let Some(fetch) = f.as_mut()
                    {
                        fetch.handle_have(key, &have, &fetching);
                    }
                    shared.notify.notify_one();
                    if full {
                        return;
                    }
                }
                Ok(Err(ShareError::NotFound)) => {
                    // Not (yet) a holder: it may start fetching the collection itself.
                }
                Ok(Err(e)) => {
                    tracing::debug!("asking {} what it holds: {e}", conn.peer().id);
                    if let Ok(mut f) = shared.fetch.lock()
                        && let Some(fetch) = f.as_mut()
                    {
                        let ids = fetch.remove_peer(key);
                        abort(&shared, &ids);
                    }
                    shared.notify.notify_one();
                    return;
                }
                Err(_) => {}
            }
            tokio::time::sleep(have_pause(interval, groups)).await;
        }
    });
}

/// Have-answer bytes a poll of one peer may cost per `have_interval`.
const HAVE_BYTES_PER_INTERVAL: u64 = 8 * 1024;

/// The pause between two have-polls of one peer: `interval` for collections up
/// to 512 MiB, longer in proportion to the answer (two bitmaps) beyond that.
fn have_pause(interval: Duration, groups: u64) -> Duration {
    let answer = 2 * groups.div_ceil(8);
    let factor = answer.div_ceil(HAVE_BYTES_PER_INTERVAL).clamp(1, 1024) as u32;
    interval * factor
}

/// Fetches the groups of request `r` from `conn`, verifying and writing each;
/// disk work of one chunk overlaps the network read of the next.
async fn fetch_range(
    conn: Connection,
    hash: Hash,
    r: fetch::Request<u64>,
    content: Arc<Content>,
    shared: Arc<Shared>,
) {
    let result = async {
        let mut stream = ask(
            &conn,
            Request::Get {
                collection: hash,
                start: r.start,
                end: r.end,
            },
        )
        .await?;
        let per_chunk = IO_CHUNK / GROUP_SIZE;
        let mut g = r.start;
        type Written = Result<(u64, u64, Option<u64>), ShareError>;
        let mut pending: Option<tokio::task::JoinHandle<Written>> = None;
        loop {
            let buf = if g < r.end && wanted(&shared, r.id) {
                let last = (g + per_chunk).min(r.end);
                let mut buf = content.chunk(content.layout().range_len(g..last));
                read_chunk(&mut stream, buf.bytes_mut(), &shared, r.id).await?;
                Some((g, last, buf))
            } else {
                None
            };
            if let Some(p) = pending.take() {
                let written = p
                    .await
                    .map_err(|_| ShareError::Protocol("disk writer failed"))?;
                let (first, ok_end, bad) = match written {
                    Ok(w) => w,
                    Err(e) => {
                        // Retrying cannot help: the whole download ends.
                        if let Ok(mut f) = shared.failed.lock() {
                            f.get_or_insert(e);
                        }
                        shared.notify.notify_one();
                        return Ok(());
                    }
                };
                if !record(&shared, &content, r.id, first, ok_end, bad) {
                    return Ok(());
                }
            }
            let Some((first, last, buf)) = buf else { break };
            let content = content.clone();
            pending = Some(tokio::task::spawn_blocking(move || {
                let done = verify_and_write(&content, first, last, buf.bytes());
                content.recycle(buf);
                done
            }));
            g = last;
        }
        if g < r.end {
            stream.stop(0);
        }
        Ok::<(), ShareError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("range {}..{} from {}: {e}", r.start, r.end, conn.peer().id);
    }
    if let Ok(mut f) = shared.fetch.lock()
        && let Some(fetch) = f.as_mut()
    {
        fetch.handle_finished(r.id);
    }
    if let Ok(mut tasks) = shared.tasks.lock() {
        tasks.remove(&r.id);
    }
    shared.notify.notify_one();
}

/// How often a request whose chunk is still arriving tells the scheduler so.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Fills `buf` from `stream`, telling the scheduler every
/// [`PROGRESS_EVERY`] that bytes of request `id` are arriving (on a slow path
/// a chunk takes longer than the stall time-out).
async fn read_chunk(
    stream: &mut crate::Stream,
    buf: &mut [u8],
    shared: &Shared,
    id: u64,
) -> Result<(), ShareError> {
    let mut at = 0;
    let mut told = Instant::now();
    while at < buf.len() {
        let n = stream.read(&mut buf[at..]).await?;
        if n == 0 {
            return Err(ShareError::Protocol("the peer ended its answer early"));
        }
        at += n;
        if told.elapsed() >= PROGRESS_EVERY && at < buf.len() {
            told = Instant::now();
            if let Ok(mut f) = shared.fetch.lock()
                && let Some(fetch) = f.as_mut()
            {
                fetch.handle_progress(id, told);
            }
        }
    }
    Ok(())
}

fn wanted(shared: &Shared, id: u64) -> bool {
    shared
        .fetch
        .lock()
        .ok()
        .and_then(|f| f.as_ref().map(|f| f.is_wanted(id)))
        .unwrap_or(false)
}

/// Tells the scheduler about groups `first..ok_end` (verified, written) and the
/// failed group `bad`; false when the request is void (its peer was dropped).
fn record(
    shared: &Shared,
    content: &Content,
    id: u64,
    first: u64,
    ok_end: u64,
    bad: Option<u64>,
) -> bool {
    let now = Instant::now();
    let mut fresh = Vec::new();
    let mut cancel = Vec::new();
    let mut alive = true;
    if let Ok(mut f) = shared.fetch.lock()
        && let Some(fetch) = f.as_mut()
    {
        for g in first..ok_end {
            match fetch.handle_group(id, g, true, now) {
                Received::Fresh => fresh.push(g),
                Received::Duplicate => {}
                Received::Corrupt { cancel: c, .. } | Received::Unexpected { cancel: c, .. } => {
                    cancel = c;
                    alive = false;
                    break;
                }
            }
        }
        if let (true, Some(bad)) = (alive, bad) {
            if let Received::Corrupt { cancel: c, .. } | Received::Unexpected { cancel: c, .. } =
                fetch.handle_group(id, bad, false, now)
            {
                tracing::warn!("a share source sent data that failed verification; dropping it");
                cancel = c;
            }
            alive = false;
        }
    }
    content.mark(fresh.into_iter());
    abort_others(shared, id, &cancel);
    shared.notify.notify_one();
    alive
}

fn abort_others(shared: &Shared, me: u64, ids: &[u64]) {
    let others: Vec<u64> = ids.iter().copied().filter(|&i| i != me).collect();
    abort(shared, &others);
}

/// Verifies groups `first..last` in `buf` and writes the good ones (one write
/// per blob the chunk touches); returns the end of the verified, written run and
/// the first group that failed verification, if any, or why writing failed.
fn verify_and_write(
    content: &Content,
    first: u64,
    last: u64,
    buf: &[u8],
) -> Result<(u64, u64, Option<u64>), ShareError> {
    let layout = content.layout();
    let mut at = 0usize;
    let mut g = first;
    let mut bad = None;
    while g < last {
        let Some((blob, local)) = layout.locate(g) else {
            bad = Some(g);
            break;
        };
        let len = layout.group_len(g) as usize;
        if !content.outboards()[blob].verify_group(local, &buf[at..at + len]) {
            bad = Some(g);
            break;
        }
        at += len;
        g += 1;
    }
    // Write the verified run, blob by blob.
    let verified_end = g;
    let mut g = first;
    let mut at = 0usize;
    while g < verified_end {
        let Some((blob, local)) = layout.locate(g) else {
            break;
        };
        let slot = layout.blobs()[blob];
        let run_end = verified_end.min(slot.first_group + slot.groups());
        let len = layout.range_len(g..run_end) as usize;
        let Some(path) = content.file_of(blob) else {
            return Ok((first, g, None));
        };
        content
            .write_at(&path, &buf[at..at + len], local * GROUP_SIZE)
            .map_err(|source| ShareError::Io { path, source })?;
        at += len;
        g = run_end;
    }
    Ok((first, verified_end, bad))
}

/// Where each entry of `collection` goes, refusing unsafe or occupied targets.
fn plan_targets(
    options: &DownloadOptions,
    collection: &Collection,
) -> Result<Vec<PathBuf>, ShareError> {
    collection
        .entries()
        .iter()
        .map(|e| {
            let target = safe_target(&options.out, &e.path)?;
            match fs::symlink_metadata(&target) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(target),
                Err(err) => Err(ShareError::io(&target, err)),
                Ok(meta) if options.force && !meta.is_dir() => Ok(target),
                Ok(meta) if meta.is_file() && meta.len() == e.size => Ok(target),
                Ok(_) => Err(ShareError::Exists(target)),
            }
        })
        .collect()
}

/// Where each empty directory of `collection` goes; refused when unsafe or a
/// file is there.
fn plan_dirs(
    options: &DownloadOptions,
    collection: &Collection,
) -> Result<Vec<PathBuf>, ShareError> {
    collection
        .dirs()
        .iter()
        .map(|d| {
            let target = safe_target(&options.out, d)?;
            match fs::symlink_metadata(&target) {
                Ok(meta) if !meta.is_dir() => Err(ShareError::Exists(target)),
                _ => Ok(target),
            }
        })
        .collect()
}

/// `out/rel`, refused if an existing directory on the way is a link (which
/// could lead the write outside `out`) or not a directory.
pub(crate) fn safe_target(out: &Path, rel: &str) -> Result<PathBuf, ShareError> {
    peerpipe_share::collection::validate_path(rel)?;
    let mut at = out.to_path_buf();
    let mut parts = rel.split('/').peekable();
    while let Some(part) = parts.next() {
        at.push(part);
        if parts.peek().is_none() {
            break;
        }
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ShareError::UnsafeTarget(at, "a symbolic link on the way"));
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(ShareError::UnsafeTarget(at, "not a directory"));
            }
            _ => {}
        }
    }
    Ok(at)
}

/// The blobs existing targets hold already, by hash (then that file serves as
/// the blob); reads only. An existing target of the right size but other
/// contents is refused unless `force`.
fn held_targets(
    collection: &Collection,
    targets: &[PathBuf],
    force: bool,
) -> Result<HashMap<Hash, PathBuf>, ShareError> {
    let mut held = HashMap::new();
    for (entry, target) in collection.entries().iter().zip(targets) {
        if held.contains_key(&entry.hash) {
            continue;
        }
        if fs::symlink_metadata(target).is_ok_and(|m| m.is_file() && m.len() == entry.size) {
            if hash_file(target, entry.size)?.root() == entry.hash {
                held.insert(entry.hash, target.clone());
            } else if !force {
                return Err(ShareError::Exists(target.clone()));
            }
        }
    }
    Ok(held)
}

/// Bytes a download still writes (see [`Download::to_write`]): per entry, none
/// when its target holds the blob already; the blob less what an earlier
/// attempt left in `partial` for the first entry of a blob; a whole copy for
/// every further one.
fn to_write(
    collection: &Collection,
    targets: &[PathBuf],
    held: &HashMap<Hash, PathBuf>,
    partial: &Path,
) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for (entry, target) in collection.entries().iter().zip(targets) {
        let first = seen.insert(entry.hash);
        let bytes = match held.get(&entry.hash) {
            Some(at) if at == target => 0,
            Some(_) => entry.size,
            None if first => {
                let there = fs::metadata(partial.join(entry.hash.to_hex()))
                    .map_or(0, |m| std::os::unix::fs::MetadataExt::blocks(&m) * 512);
                entry.size.saturating_sub(there)
            }
            None => entry.size,
        };
        total = total.saturating_add(bytes);
    }
    total
}

/// Sets up the partial directory and finds what is verified on disk: groups of
/// partial files from an earlier attempt, and the blobs of `held` (from
/// [`held_targets`]). Partial files are made when their first bytes arrive,
/// not here: a collection of many small files starts fetching at once.
fn prepare(
    layout: &Layout,
    outboards: &[Outboard],
    held: &HashMap<Hash, PathBuf>,
    partial: &Path,
) -> Result<(Vec<PathBuf>, Bitmap), ShareError> {
    fs::create_dir_all(partial).map_err(|e| ShareError::io(partial, e))?;
    // What an earlier attempt left: only those files are read back.
    let earlier: std::collections::HashSet<std::ffi::OsString> = fs::read_dir(partial)
        .map_err(|e| ShareError::io(partial, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    let mut done = Bitmap::new(layout.groups());
    let mut files = Vec::with_capacity(layout.blobs().len());
    let mut buf = Vec::new();
    for (blob, slot) in layout.blobs().iter().enumerate() {
        if let Some(target) = held.get(&slot.hash) {
            done.set_range(slot.first_group..slot.first_group + slot.groups());
            files.push(target.clone());
            continue;
        }
        let name = slot.hash.to_hex();
        let path = partial.join(&name);
        if earlier.contains(std::ffi::OsStr::new(&name)) {
            let file = OpenOptions::new()
                .read(true)
                .open(&path)
                .map_err(|e| ShareError::io(&path, e))?;
            let len = file.metadata().map_err(|e| ShareError::io(&path, e))?.len();
            buf.resize(GROUP_SIZE as usize, 0);
            for local in 0..slot.groups() {
                let range = group_range(slot.size, local);
                if range.end > len {
                    break;
                }
                let data = &mut buf[..(range.end - range.start) as usize];
                if file.read_exact_at(data, range.start).is_ok()
                    && outboards[blob].verify_group(local, data)
                {
                    done.set(slot.first_group + local);
                }
            }
        }
        files.push(path);
    }
    Ok((files, done))
}

/// Moves every verified blob to its targets, with its mode and modification
/// time, makes the empty directories `dirs`, and removes the partial directory.
fn finalize(
    content: &Content,
    targets: &[PathBuf],
    dirs: &[PathBuf],
    partial: &Path,
) -> Result<Vec<PathBuf>, ShareError> {
    let layout = content.layout();
    let blob_of: HashMap<Hash, usize> = layout
        .blobs()
        .iter()
        .enumerate()
        .map(|(i, b)| (b.hash, i))
        .collect();
    let mut placed: HashMap<Hash, PathBuf> = HashMap::new();
    let mut made: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    for (entry, target) in content.collection().entries().iter().zip(targets) {
        let blob = *blob_of
            .get(&entry.hash)
            .ok_or(ShareError::Protocol("entry without blob"))?;
        let source = content
            .file_of(blob)
            .ok_or(ShareError::Protocol("blob without file"))?;
        if let Some(parent) = target.parent()
            && !made.contains(parent)
        {
            fs::create_dir_all(parent).map_err(|e| ShareError::io(parent, e))?;
            made.insert(parent.to_path_buf());
        }
        // An empty blob has no groups, so nothing ever made its partial file.
        if entry.size == 0 && source.starts_with(partial) && !placed.contains_key(&entry.hash) {
            fs::File::create(&source).map_err(|e| ShareError::io(&source, e))?;
        }
        if source != *target {
            match placed.get(&entry.hash) {
                Some(first) => {
                    fs::copy(first, target).map_err(|e| ShareError::io(target, e))?;
                }
                None if source.starts_with(partial) => {
                    fs::rename(&source, target).map_err(|e| ShareError::io(target, e))?;
                    content.set_file(blob, target.clone());
                }
                None => {
                    fs::copy(&source, target).map_err(|e| ShareError::io(target, e))?;
                }
            }
            // Written here: it gets the sender's time (a file that was in
            // place already keeps its own).
            if entry.mtime != 0 {
                let at = std::time::UNIX_EPOCH + Duration::from_secs(entry.mtime);
                fs::File::options()
                    .write(true)
                    .open(target)
                    .and_then(|f| f.set_modified(at))
                    .map_err(|e| ShareError::io(target, e))?;
            }
        }
        fs::set_permissions(target, fs::Permissions::from_mode(entry.mode))
            .map_err(|e| ShareError::io(target, e))?;
        placed.entry(entry.hash).or_insert_with(|| target.clone());
    }
    for dir in dirs {
        fs::create_dir_all(dir).map_err(|e| ShareError::io(dir, e))?;
    }
    let _ = fs::remove_dir_all(partial);
    Ok(targets.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_write_counts_what_is_not_in_place_yet() {
        use peerpipe_share::collection::Entry;
        let entry = |path: &str, size: u64, seed: &[u8]| Entry {
            path: path.into(),
            size,
            mode: 0o644,
            mtime: 0,
            hash: Hash::of(seed),
        };
        let collection = Collection::new(vec![
            entry("a", 1000, b"one"),
            entry("b", 1000, b"one"),
            entry("c", 5000, b"two"),
            entry("d", 7000, b"three"),
        ])
        .unwrap();
        let out = std::env::temp_dir().join(format!("to-write-{:x}", rand::random::<u64>()));
        let targets: Vec<PathBuf> = collection
            .entries()
            .iter()
            .map(|e| out.join(&e.path))
            .collect();
        let nowhere = out.join("partial");
        // Nothing here: every entry, a second copy of "one" included.
        assert_eq!(
            to_write(&collection, &targets, &HashMap::new(), &nowhere),
            14_000
        );
        // "a" holds "one" already: "b" is a copy of it; "c" is in place.
        let held = HashMap::from([
            (Hash::of(b"one"), out.join("a")),
            (Hash::of(b"two"), out.join("c")),
        ]);
        assert_eq!(to_write(&collection, &targets, &held, &nowhere), 8_000);

        // An earlier attempt left 4 KiB of "three" in the partial directory.
        let partial = out.join("partial");
        fs::create_dir_all(&partial).unwrap();
        fs::write(partial.join(Hash::of(b"three").to_hex()), vec![1u8; 4096]).unwrap();
        let left = to_write(&collection, &targets, &held, &partial);
        let _ = fs::remove_dir_all(&out);
        // The copy of "one" and what "three" still lacks (its file may take more
        // blocks than its length on some filesystems).
        assert!((1000..=1000 + 7000 - 4096).contains(&left), "{left}");
    }

    #[test]
    fn have_polls_slow_down_for_large_collections() {
        let i = Duration::from_millis(50);
        assert_eq!(have_pause(i, 1857), i);
        assert_eq!(have_pause(i, 32_768), i, "512 MiB: two 4 KiB bitmaps");
        assert_eq!(have_pause(i, 65_536), 2 * i, "1 GiB");
        assert_eq!(have_pause(i, 1 << 24), 512 * i, "256 GiB");
    }
}
