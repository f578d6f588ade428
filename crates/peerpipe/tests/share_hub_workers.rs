//! Content sharing to a team: one hub shares a directory with six workers of the
//! same user over the real server. Every worker fetches from the hub and from
//! every other worker at once (random starting places), serves what it holds
//! while it downloads and after, and ends with a verified, byte-identical copy.
//! The workers trade among themselves, so the hub uploads at most two copies.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use common::{TempDir, TestServer, init_tracing, list_tree, pseudo_random, spawn_share_acceptor};
use peerpipe::Node;
use peerpipe::share::{self, Content, Download, DownloadOptions, Library, Report};
use tracing::Instrument as _;

const MIB: usize = 1024 * 1024;
const WORKERS: usize = 6;
/// The bound on the whole scenario.
const LIMIT: Duration = Duration::from_secs(120);
/// The hub's upload target: at most this many copies of the collection.
const HUB_COPIES: u64 = 2;

/// The shared directory: ~29 MiB, one file of an odd size, one empty, one nested.
const FILES: &[(&str, usize)] = &[
    ("a.bin", 12 * MIB),
    ("b.bin", 9 * MIB + 12_345),
    ("nested/c.bin", 8 * MIB),
    ("empty", 0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_feeds_six_workers_that_trade_among_themselves() -> Result<()> {
    init_tracing();
    tokio::time::timeout(LIMIT, scenario())
        .await
        .context("the test timed out")?
}

struct Worker {
    node: Node,
    out: PathBuf,
    download: Arc<Download>,
    library: Library,
    acceptor: tokio::task::JoinHandle<()>,
}

async fn scenario() -> Result<()> {
    let tmp = TempDir::new("share-hub")?;
    let src = tmp.path().join("shared");
    for (i, (name, len)) in FILES.iter().enumerate() {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().context("a parent")?)?;
        std::fs::write(&path, pseudo_random(*len, i as u64 + 1))?;
    }
    let content = {
        let src = src.clone();
        tokio::task::spawn_blocking(move || Content::from_paths(&[src])).await??
    };
    let content = Arc::new(content);
    let hash = content.hash();
    let total = content.collection().total_size();
    ensure!(content.collection().entries().len() == FILES.len());

    let server = TestServer::start().await?;
    let hub = server.node("alice", "hub").await?;
    let hub_library = Library::new();
    hub_library.add(content.clone());
    let hub_acceptor = spawn_share_acceptor(hub.clone(), hub_library, "hub", |_| {});

    // Every worker downloads and accepts share connections (serving each and
    // fetching from it) before anyone dials.
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let name = format!("w{i}");
        let node = server.node("alice", &name).await?;
        let out = tmp.path().join(&name);
        std::fs::create_dir(&out)?;
        let library = Library::new();
        let download = Arc::new(Download::start(
            hash,
            DownloadOptions::new(&out),
            library.clone(),
        ));
        let sources = download.clone();
        let acceptor = spawn_share_acceptor(node.clone(), library.clone(), &name, move |conn| {
            sources.add_source(conn);
        });
        workers.push(Worker {
            node,
            out,
            download,
            library,
            acceptor,
        });
    }
    for w in &workers {
        wait_online(&w.node, WORKERS).await?;
    }

    // Every worker dials every other device, serves and fetches on each.
    let started = Instant::now();
    let mut dials = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        for peer in w.node.online_peers().await? {
            let (node, library, download) = (w.node.clone(), w.library.clone(), w.download.clone());
            let dial = async move {
                let conn = node
                    .connect_service(peer.id, share::SERVICE)
                    .await
                    .with_context(|| format!("connecting to {}", peer.label))?;
                tokio::spawn(share::serve(conn.clone(), library).in_current_span());
                download.add_source(conn);
                anyhow::Ok(())
            };
            dials.push(tokio::spawn(
                dial.instrument(tracing::info_span!("peer", peer = format!("w{i}"))),
            ));
        }
    }
    let mut finishing = Vec::new();
    for w in &workers {
        let download = w.download.clone();
        finishing.push(tokio::spawn(async move {
            let report = download.finish().await;
            (report, started.elapsed())
        }));
    }
    for dial in dials {
        dial.await??;
    }
    let mut reports: Vec<(Report, Duration)> = Vec::new();
    for (i, f) in finishing.into_iter().enumerate() {
        let (report, took) = f.await?;
        reports.push((report.with_context(|| format!("worker w{i}"))?, took));
    }
    let elapsed = started.elapsed();
    // Everyone served until all were done; now stop.
    for w in &workers {
        w.node.shutdown().await;
        w.acceptor.abort();
    }
    hub.shutdown().await;
    hub_acceptor.abort();

    // Every worker holds exactly the shared tree, byte for byte.
    for (w, (report, _)) in workers.iter().zip(&reports) {
        ensure!(report.total_bytes == total);
        ensure!(w.download.progress() == Some((total, total)));
        check_copy(&src, &w.out.join("shared")).await?;
        ensure!(
            list_tree(&w.out)?.len() == FILES.len(),
            "leftovers in {}",
            w.out.display()
        );
    }

    let ratio = |bytes: u64| bytes as f64 / total as f64;
    let hub_up = content.uploaded();
    eprintln!(
        "collection {total} bytes, {WORKERS} workers, all done in {:.2} s",
        elapsed.as_secs_f64()
    );
    eprintln!("hub uploaded {hub_up} bytes ({:.2} copies)", ratio(hub_up));
    let mut all_up = hub_up;
    for (i, (w, (report, took))) in workers.iter().zip(&reports).enumerate() {
        let up = w.download.content().map_or(0, |c| c.uploaded());
        all_up += up;
        eprintln!(
            "w{i}: done after {:.2} s, uploaded {up} bytes ({:.2} copies), \
             requested {} groups for {} missing, dropped peers {:?}",
            took.as_secs_f64(),
            ratio(up),
            report.requested_groups,
            report.missing_groups,
            report.dropped_peers,
        );
    }
    eprintln!(
        "all uploads: {all_up} bytes ({:.2} copies for {WORKERS} downloads)",
        ratio(all_up)
    );
    ensure!(
        hub_up <= HUB_COPIES * total,
        "the hub uploaded {hub_up} bytes, {:.2} copies of the collection (target: at most {HUB_COPIES})",
        ratio(hub_up)
    );

    Ok(())
}

/// Waits (bounded) until `node` sees `others` other devices online.
async fn wait_online(node: &Node, others: usize) -> Result<()> {
    let wait = async {
        loop {
            if node.online_peers().await?.len() >= others {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(common::EVENT_LIMIT, wait)
        .await
        .context("waiting for every device to be online")?
}

/// Checks that `copy` holds the files of `src` with the same bytes and modes.
async fn check_copy(src: &Path, copy: &Path) -> Result<()> {
    let (src, copy) = (src.to_path_buf(), copy.to_path_buf());
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::PermissionsExt as _;
        let files = list_tree(&src)?;
        ensure!(
            list_tree(&copy)? == files,
            "{} lists other files",
            copy.display()
        );
        for name in files.keys() {
            let (a, b) = (src.join(name), copy.join(name));
            ensure!(
                std::fs::read(&a)? == std::fs::read(&b)?,
                "{} differs",
                b.display()
            );
            let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
            ensure!(mode(&a)? == mode(&b)?, "{} has another mode", b.display());
        }
        Ok(())
    })
    .await?
}
