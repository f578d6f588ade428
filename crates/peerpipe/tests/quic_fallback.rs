//! A 1 GiB stream over the QUIC path during which that path is killed twice,
//! first from the dialing side, then from the accepting side: each time the
//! connection falls back to the relay, a new QUIC path takes over, and the
//! receiver ends byte-identical.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use common::{TestServer, fill_pattern, quic_pair, spawn_pattern_writer};
use peerpipe::{Connection, Node, NodeEvent, PathKind, SessionId};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const LEN: u64 = 1 << 30;
const CHUNK: usize = 256 * 1024;
/// The bound on the whole test.
const LIMIT: Duration = Duration::from_secs(300);
/// The longest a single read may wait: a stall fails with the paths it saw.
const READ_LIMIT: Duration = Duration::from_secs(30);
/// How long after the stream ended the last new QUIC path may take.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// The path moves one node reports for one connection, as they come.
struct Side {
    name: &'static str,
    conn: Connection,
    moves: mpsc::UnboundedReceiver<(PathKind, Instant)>,
    watcher: JoinHandle<()>,
    /// The moves reported since the last kill, with when they came.
    seen: Vec<(PathKind, Instant)>,
}

impl Side {
    /// Starts reading `node`'s events (the only reader from now on) and keeps
    /// the [`NodeEvent::PathChanged`] ones of `conn`.
    fn watch(name: &'static str, node: &Node, conn: &Connection) -> Self {
        let (tx, moves) = mpsc::unbounded_channel();
        let session: SessionId = conn.session_id();
        let node = node.clone();
        // Ends when the node stops or the test drops the side (abort).
        let watcher = tokio::spawn(async move {
            while let Some(event) = node.next_event().await {
                if let NodeEvent::PathChanged {
                    path, session: s, ..
                } = event
                    && s == session
                    && tx.send((path, Instant::now())).is_err()
                {
                    return;
                }
            }
        });
        Self {
            name,
            conn: conn.clone(),
            moves,
            watcher,
            seen: Vec::new(),
        }
    }

    /// Takes in the moves reported so far.
    fn poll(&mut self) {
        while let Ok(moved) = self.moves.try_recv() {
            self.seen.push(moved);
        }
    }

    /// Forgets the moves so far: a kill follows.
    fn reset(&mut self) {
        self.poll();
        self.seen.clear();
    }

    /// When the relay, then a QUIC path after it, were reported since the last
    /// kill.
    fn fell_back_and_recovered(&self) -> Option<(Instant, Instant)> {
        let relay = self.seen.iter().position(|(p, _)| *p == PathKind::Relay)?;
        let quic = self.seen[relay + 1..]
            .iter()
            .find(|(p, _)| *p == PathKind::Quic)?;
        Some((self.seen[relay].1, quic.1))
    }

    /// The moves since the last kill, for messages.
    fn moves(&self) -> Vec<PathKind> {
        self.seen.iter().map(|(p, _)| *p).collect()
    }

    fn describe(&self) -> String {
        format!(
            "{}: now {:?}, moves since the last kill {:?}",
            self.name,
            self.conn.path(),
            self.moves()
        )
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// One kill of the QUIC path and how both sides took it.
struct Kill {
    by: &'static str,
    at_byte: u64,
    at: Instant,
    /// Per side (dialer, accepter): the relay after, the new QUIC path after.
    recovered: [Option<(Duration, Duration)>; 2],
}

impl Kill {
    fn new(by: &'static str, at_byte: u64, sides: [&mut Side; 2]) -> Self {
        for side in sides {
            side.reset();
        }
        Self {
            by,
            at_byte,
            at: Instant::now(),
            recovered: [None, None],
        }
    }

    /// Records the sides that have fallen back and recovered; `true` once
    /// both have.
    fn check(&mut self, sides: [&Side; 2]) -> bool {
        for (slot, side) in self.recovered.iter_mut().zip(sides) {
            if slot.is_none() {
                *slot = side
                    .fell_back_and_recovered()
                    .map(|(relay, quic)| (relay - self.at, quic - self.at));
            }
        }
        self.recovered.iter().all(Option::is_some)
    }

    fn report(&self) {
        let ms = |d: Option<(Duration, Duration)>, pick: fn((Duration, Duration)) -> Duration| {
            d.map_or_else(|| "-".to_owned(), |d| format!("{:?}", pick(d)))
        };
        eprintln!(
            "kill by the {} side at byte {} ({:.1} %): relay after {} / {}, QUIC again after {} / {} (dialer / accepter)",
            self.by,
            self.at_byte,
            self.at_byte as f64 * 100.0 / LEN as f64,
            ms(self.recovered[0], |d| d.0),
            ms(self.recovered[1], |d| d.0),
            ms(self.recovered[0], |d| d.1),
            ms(self.recovered[1], |d| d.1),
        );
    }
}

/// Needs a release build (1 GiB through the encrypted relay and QUIC paths
/// takes minutes in debug), so it is opt-in: `.ci/run` runs it as its own step,
/// `cargo test -p peerpipe --release --test quic_fallback -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1 GiB: release, its own step of .ci/run"]
async fn a_quic_path_killed_mid_stream_falls_back_and_completes() -> Result<()> {
    common::init_tracing();
    tokio::time::timeout(LIMIT, scenario())
        .await
        .context("the test timed out")?
}

async fn scenario() -> Result<()> {
    let server = TestServer::start().await?;
    let (a, b, to_b, from_a) = quic_pair(&server).await?;
    let mut dialer = Side::watch("dialer", &a, &to_b);
    let mut accepter = Side::watch("accepter", &b, &from_a);

    let started = Instant::now();
    let relayed_start = server.server.stats().relay_bytes;
    let out = to_b.open_stream().await?;
    let writer = spawn_pattern_writer(out, LEN, CHUNK);
    let mut stream = from_a.accept_stream().await?;
    let mut buf = vec![0; CHUNK];
    let mut expected = vec![0; CHUNK];
    let mut got = 0u64;
    let mut kills: Vec<Kill> = Vec::new();
    // Ends at the end of the stream (at most LEN bytes, each read within
    // READ_LIMIT).
    loop {
        let n = match tokio::time::timeout(READ_LIMIT, stream.read(&mut buf)).await {
            Ok(read) => read.with_context(|| {
                dialer.poll();
                accepter.poll();
                format!(
                    "reading at byte {got} ({} kills; {}; {})",
                    kills.len(),
                    dialer.describe(),
                    accepter.describe()
                )
            })?,
            Err(_) => {
                dialer.poll();
                accepter.poll();
                bail!(
                    "the stream stalled at byte {got} for {READ_LIMIT:?} ({}; {})",
                    dialer.describe(),
                    accepter.describe()
                );
            }
        };
        if n == 0 {
            break;
        }
        fill_pattern(&mut expected[..n], got);
        if buf[..n] != expected[..n] {
            let k = (0..n).find(|&k| buf[k] != expected[k]).unwrap_or(0);
            bail!("byte {} differs", got + k as u64);
        }
        got += n as u64;
        ensure!(got <= LEN, "got {got} bytes, more than the {LEN} sent");
        dialer.poll();
        accepter.poll();
        match kills.len() {
            // At a third, from the dialing side.
            0 if got >= LEN / 3 => {
                to_b.restart_direct();
                kills.push(Kill::new("dialer", got, [&mut dialer, &mut accepter]));
            }
            // At two thirds, from the accepting side, once the first kill is
            // behind both sides.
            1 if kills[0].check([&dialer, &accepter]) && got >= 2 * LEN / 3 => {
                from_a.restart_direct();
                kills.push(Kill::new("accepter", got, [&mut dialer, &mut accepter]));
            }
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    writer.await??;
    let relayed = server.server.stats().relay_bytes - relayed_start;
    ensure!(got == LEN, "got {got} of {LEN} bytes");
    eprintln!(
        "1 GiB in {elapsed:.2?}: {:.0} MB/s; the relay carried {relayed} bytes ({:.1} % of the stream)",
        LEN as f64 / 1e6 / elapsed.as_secs_f64(),
        relayed as f64 * 100.0 / LEN as f64,
    );
    if kills.len() < 2 {
        kills.iter().for_each(Kill::report);
    }
    ensure!(
        kills.len() == 2,
        "the stream ended before the second kill: the first one was not behind both sides yet ({}; {})",
        dialer.describe(),
        accepter.describe()
    );

    // The last new QUIC path may come up after the stream ended.
    let settle_by = Instant::now() + SETTLE_LIMIT;
    while !kills[1].check([&dialer, &accepter]) {
        if Instant::now() >= settle_by {
            kills.iter().for_each(Kill::report);
            bail!(
                "no new QUIC path {SETTLE_LIMIT:?} after the stream ended ({}; {})",
                dialer.describe(),
                accepter.describe()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        dialer.poll();
        accepter.poll();
    }
    kills.iter().for_each(Kill::report);
    ensure!(
        to_b.path() == PathKind::Quic && from_a.path() == PathKind::Quic,
        "not on the QUIC path at the end ({}; {})",
        dialer.describe(),
        accepter.describe()
    );
    // The connection still works, on the new QUIC path.
    let (sent, received) = tokio::join!(to_b.send_confirmed("after"), from_a.recv());
    sent?;
    ensure!(received?.as_deref() == Some(&b"after"[..]));
    Ok(())
}
