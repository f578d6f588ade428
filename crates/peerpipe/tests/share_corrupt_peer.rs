//! A seed serving bit-rotted data: two seeds hashed the same file, then one
//! copy rotted on disk (bytes flipped every MiB). A downloader fetching from
//! both (the rotten seed first) drops the rotten seed at its first bad group,
//! takes the rest from the good one, and never writes a byte that failed
//! verification: the result is identical to the original.

mod common;

use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use common::{TempDir, TestServer, init_tracing, list_tree, pseudo_random, spawn_share_acceptor};
use peerpipe::share::{self, Content, Download, DownloadOptions, Library};

const MIB: u64 = 1024 * 1024;
/// ~8 MiB, not a whole number of groups.
const LEN: u64 = 8 * MIB + 3;
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_with_rotten_data_is_dropped_and_nothing_rotten_is_written() -> Result<()> {
    init_tracing();
    tokio::time::timeout(LIMIT, scenario())
        .await
        .context("the test timed out")?
}

async fn scenario() -> Result<()> {
    let tmp = TempDir::new("share-corrupt")?;
    let original = pseudo_random(LEN as usize, 42);
    // Each seed has its own copy, under the same name (so the same collection).
    let (dir_a, dir_b) = (tmp.path().join("a/data"), tmp.path().join("b/data"));
    for dir in [&dir_a, &dir_b] {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("file.bin"), &original)?;
    }
    let content_a = hash(&dir_a).await?;
    let content_b = hash(&dir_b).await?;
    let hash = content_a.hash();
    ensure!(content_b.hash() == hash, "the two copies hash differently");

    // Bit rot in A's copy after hashing: in the first group of every MiB (so
    // any request of 64 groups or more has one) and in the last, short group.
    {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir_a.join("file.bin"))?;
        let places: Vec<u64> = (0..LEN / MIB)
            .map(|k| k * MIB + 777)
            .chain([LEN - 1])
            .collect();
        for at in places {
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at)?;
            file.write_all_at(&[byte[0] ^ 0x5a], at)?;
        }
    }
    ensure!(std::fs::read(dir_a.join("file.bin"))? != original);

    let server = TestServer::start().await?;
    let a = server.node("alice", "seed-a").await?;
    let b = server.node("alice", "seed-b").await?;
    let c = server.node("alice", "downloader").await?;
    let serve_a = seed(&a, content_a, "seed-a");
    let serve_b = seed(&b, content_b, "seed-b");

    let out = tmp.path().join("out");
    std::fs::create_dir(&out)?;
    let download = Download::start(hash, DownloadOptions::new(&out), Library::new());
    let to_a = c.connect_service(a.id(), share::SERVICE).await?;
    let to_b = c.connect_service(b.id(), share::SERVICE).await?;
    download.add_source(to_a);
    download.add_source(to_b);
    let report = download.finish().await?;

    ensure!(
        report.dropped_peers == vec![a.id()],
        "dropped {:?}, expected only the rotten seed {}",
        report.dropped_peers,
        a.id()
    );
    ensure!(report.total_bytes == LEN && report.fetched_bytes == LEN);
    ensure!(
        list_tree(&out)?.into_keys().collect::<Vec<_>>() == ["data/file.bin"],
        "other files in {}",
        out.display()
    );
    ensure!(
        std::fs::read(out.join("data/file.bin"))? == original,
        "the download differs from the original"
    );
    eprintln!(
        "{LEN} bytes, {} groups requested for {}, dropped {:?}",
        report.requested_groups, report.missing_groups, report.dropped_peers
    );

    for node in [&a, &b, &c] {
        node.shutdown().await;
    }
    serve_a.abort();
    serve_b.abort();
    Ok(())
}

async fn hash(dir: &Path) -> Result<Arc<Content>> {
    let dir = dir.to_path_buf();
    let content = tokio::task::spawn_blocking(move || Content::from_paths(&[dir])).await??;
    Ok(Arc::new(content))
}

/// Serves `content` on every share connection `node` accepts.
fn seed(node: &peerpipe::Node, content: Arc<Content>, name: &str) -> tokio::task::JoinHandle<()> {
    let library = Library::new();
    library.add(content);
    spawn_share_acceptor(node.clone(), library, name, |_| {})
}
