//! Downloads never write outside their directory: a correctly hashed collection
//! with a `../` entry from a malicious peer is refused, and so is a collection
//! whose entries would be written through a symbolic link found in the target
//! directory.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{TempDir, TestServer, init_tracing, list_tree, spawn_share_acceptor};
use peerpipe::NodeEvent;
use peerpipe::share::{self, Content, Download, DownloadOptions, Hash, Library, ShareError};
use peerpipe_share::collection::CollectionError;
use peerpipe_share::wire::{Request, Status};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const LIMIT: Duration = Duration::from_secs(60);

/// A collection of one file at `path`, encoded by hand (`ppcoll2\n`, the entry
/// count, then per entry: path length and bytes, size, mode, modification
/// time, blob hash; then the count of empty directories, none; all
/// big-endian) so that no validation runs on this side.
fn encode_collection(path: &str, blob: &[u8]) -> Vec<u8> {
    let mut out = b"ppcoll2\n".to_vec();
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&(path.len() as u16).to_be_bytes());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(&(blob.len() as u64).to_be_bytes());
    out.extend_from_slice(&0o644u32.to_be_bytes());
    out.extend_from_slice(&1_700_000_000u64.to_be_bytes());
    out.extend_from_slice(Hash::of(blob).as_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correctly_hashed_traversal_entry_is_refused() -> Result<()> {
    init_tracing();
    tokio::time::timeout(LIMIT, traversal_entry())
        .await
        .context("the test timed out")?
}

async fn traversal_entry() -> Result<()> {
    let tmp = TempDir::new("share-traversal")?;
    let out = tmp.path().join("out");
    std::fs::create_dir(&out)?;
    let evil = encode_collection("../escape", b"escaped!");
    // Named by its true hash: only the path check can refuse it.
    let hash = Hash::of(&evil);

    let server = TestServer::start().await?;
    let m = server.node("alice", "malicious").await?;
    let d = server.node("alice", "downloader").await?;
    let asked = Arc::new(AtomicUsize::new(0));
    let peer = tokio::spawn(malicious_peer(m.clone(), hash, evil, asked.clone()));

    let mut options = DownloadOptions::new(&out);
    // Were the refusal treated as this peer's fault only, the download would
    // wait for another source: keep that wait short.
    options.no_source_timeout = Duration::from_secs(5);
    let download = Download::start(hash, options, Library::new());
    download.add_source(d.connect_service(m.id(), share::SERVICE).await?);
    let result = download.finish().await;

    ensure!(
        asked.load(Ordering::Relaxed) >= 1,
        "the collection was never asked for"
    );
    match result {
        Err(ShareError::Collection(CollectionError::UnsafePath { path, .. })) => {
            ensure!(path == "../escape", "refused for {path:?}");
        }
        other => bail!("expected the unsafe path to be refused, got {other:?}"),
    }
    ensure!(!tmp.path().join("escape").exists(), "a file escaped");
    ensure!(
        list_tree(tmp.path())?.is_empty(),
        "files appeared: {:?}",
        list_tree(tmp.path())?
    );
    ensure!(
        std::fs::read_dir(tmp.path())?.count() == 1,
        "something next to the out dir"
    );

    m.shutdown().await;
    d.shutdown().await;
    peer.abort();
    Ok(())
}

/// Accepts share connections on `node` and answers a collection request for
/// `hash` with `encoded` (anything else: not found), counting them in `asked`.
async fn malicious_peer(
    node: peerpipe::Node,
    hash: Hash,
    encoded: Vec<u8>,
    asked: Arc<AtomicUsize>,
) -> Result<()> {
    let encoded: Arc<[u8]> = encoded.into();
    while let Some(event) = node.next_event().await {
        let NodeEvent::IncomingConnection(incoming) = event else {
            continue;
        };
        let conn = incoming.accept().await?;
        let (encoded, asked) = (encoded.clone(), asked.clone());
        tokio::spawn(async move {
            while let Ok(mut stream) = conn.accept_stream().await {
                let mut buf = Vec::new();
                (&mut stream)
                    .take(64)
                    .read_to_end(&mut buf)
                    .await
                    .context("reading a request")?;
                if Request::decode(&buf) == Ok(Request::Collection(hash)) {
                    asked.fetch_add(1, Ordering::Relaxed);
                    let mut answer = vec![Status::Ok as u8];
                    answer.extend_from_slice(&(encoded.len() as u64).to_be_bytes());
                    answer.extend_from_slice(&encoded);
                    stream.write_all(&answer).await?;
                } else {
                    stream.write_all(&[Status::NotFound as u8]).await?;
                }
                stream.shutdown().await?;
            }
            anyhow::Ok(())
        });
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbolic_link_in_the_target_directory_is_not_followed() -> Result<()> {
    init_tracing();
    tokio::time::timeout(LIMIT, link_in_target())
        .await
        .context("the test timed out")?
}

async fn link_in_target() -> Result<()> {
    let tmp = TempDir::new("share-link")?;
    let elsewhere = TempDir::new("share-link-elsewhere")?;
    // The seed shares a directory `sub` holding `file`: entries `sub/file`.
    let shared = tmp.path().join("seed/sub");
    std::fs::create_dir_all(&shared)?;
    std::fs::write(shared.join("file"), b"through the link?")?;
    let content = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || Content::from_paths(&[shared])).await??
    };
    let paths: Vec<_> = content
        .collection()
        .entries()
        .iter()
        .map(|e| e.path.clone())
        .collect();
    ensure!(paths == ["sub/file"], "entries {paths:?}");
    let hash = content.hash();
    // The out dir holds `sub`, a link to another directory.
    let out = tmp.path().join("out");
    std::fs::create_dir(&out)?;
    std::os::unix::fs::symlink(elsewhere.path(), out.join("sub"))?;

    let server = TestServer::start().await?;
    let s = server.node("alice", "seed").await?;
    let d = server.node("alice", "downloader").await?;
    let library = Library::new();
    library.add(Arc::new(content));
    let serving = spawn_share_acceptor(s.clone(), library, "seed", |_| {});

    let download = Download::start(hash, DownloadOptions::new(&out), Library::new());
    download.add_source(d.connect_service(s.id(), share::SERVICE).await?);
    match download.finish().await {
        Err(ShareError::UnsafeTarget(at, _)) => {
            ensure!(at == out.join("sub"), "refused at {}", at.display());
        }
        other => bail!("expected the link to be refused, got {other:?}"),
    }
    ensure!(
        std::fs::read_dir(elsewhere.path())?.count() == 0,
        "something was written through the link"
    );
    let left = list_tree(&out)?;
    ensure!(
        left.len() == 1 && left.get("sub") == Some(&false),
        "out holds {left:?}"
    );
    ensure!(out.join("sub").is_symlink(), "the link is gone");

    s.shutdown().await;
    d.shutdown().await;
    serving.abort();
    Ok(())
}
