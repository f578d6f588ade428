//! `peerpipe demo`: an embedded server and two devices in one process move a
//! generated file, starting on the relay and moving to the direct path, and the
//! command reports what happened and how fast.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use peerpipe::{Identity, Node, NodeEvent};
use peerpipe_server::{Config, Server};
use rand::{Rng as _, RngCore as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CHUNK: usize = 256 * 1024;

/// Where the demo's report goes: stderr, unless `-q`; the live progress line
/// (rewritten with `\r`) only when stderr is a terminal.
#[derive(Clone, Copy)]
struct Out {
    quiet: bool,
    tty: bool,
}

impl Out {
    fn say(self, text: std::fmt::Arguments<'_>) {
        if !self.quiet {
            let end = if self.tty { "\x1b[K" } else { "" };
            say!("{}{end}", text);
        }
    }

    /// The progress line, rewritten in place; nothing when not on a terminal.
    fn progress(self, done: u64, total: u64, started: Instant) {
        if self.quiet || !self.tty {
            return;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        // Like `eprint!`, without failing when stderr is closed.
        let _ = write!(
            std::io::stderr(),
            "\r      {} / {}  {:.1} MB/s\x1b[K\r",
            human(done),
            human(total),
            done as f64 / secs / 1e6
        );
    }
}

pub async fn run(size: u64, quiet: bool) -> Result<()> {
    use std::io::IsTerminal as _;
    let out = Out {
        quiet,
        tty: std::io::stderr().is_terminal(),
    };
    let dir = std::env::temp_dir().join(format!("peerpipe-demo-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(&dir, size, out).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path, size: u64, out: Out) -> Result<()> {
    let source = dir.join("source.bin");
    let target = dir.join("received.bin");
    out.say(format_args!(
        "[1/4] generating a {} file of random bytes",
        human(size)
    ));
    generate(&source, size)?;

    let secret: [u8; 32] = rand::random();
    let mut config = Config::new(secret.to_vec());
    config.listen = "127.0.0.1:0".parse().context("loopback address")?;
    let server = Server::bind(config)
        .await
        .context("starting the embedded server")?;
    out.say(format_args!("[2/4] embedded server on {}", server.url()));

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = peerpipe_proto::token::mint(&secret, "demo", now + 3600)?;
    let node = |label: &str| {
        Node::builder()
            .server(server.url())
            .token(token.clone())
            .identity(Identity::from_secret_bytes(rand::thread_rng().r#gen()))
            .label(label.to_string())
            .bind()
    };
    let receiver = node("receiver").await.context("receiver joining")?;
    let sender = node("sender").await.context("sender joining")?;
    out.say(format_args!(
        "      devices of user \"demo\": sender {} and receiver {}",
        sender.id().short(),
        receiver.id().short()
    ));

    let receive = tokio::spawn(receive(receiver.clone(), target.clone()));
    let sent = Arc::new(AtomicU64::new(0));
    let relayed_at_start = server.stats().relay_bytes;
    tokio::spawn(report_paths(
        sender.clone(),
        sent.clone(),
        Instant::now(),
        out,
    ));
    let started = Instant::now();
    let conn = sender
        .connect(receiver.id())
        .await
        .context("sender connecting to receiver")?;
    out.say(format_args!(
        "[3/4] connected and end-to-end encrypted in {:.1} ms, path: relay (through the server); \
         sending while the direct path is negotiated",
        started.elapsed().as_secs_f64() * 1e3
    ));
    let started = Instant::now();
    let mut file = tokio::fs::File::open(&source).await?;
    let mut stream = conn.open_stream().await.context("opening a stream")?;
    let mut buf = vec![0u8; CHUNK];
    let sent_total = sent;
    let mut sent = 0u64;
    let mut last_report = Instant::now();
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await.context("sending")?;
        sent += n as u64;
        sent_total.store(sent, Ordering::Relaxed);
        if last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            out.progress(sent, size, started);
        }
    }
    stream.shutdown().await.context("sending")?;
    // The receiver closes the connection once everything is on its disk.
    if let Err(e) = conn.recv().await {
        return Err(e).context("waiting for the receiver to store everything");
    }
    let elapsed = started.elapsed();
    out.progress(sent, size, started);
    let received = receive.await.context("receiver task")??;

    out.say(format_args!("[4/4] verifying"));
    if received != size || !same_contents(&source, &target)? {
        bail!("the received file differs from the source ({received} of {size} bytes)");
    }
    let stats = server.stats();
    let secs = elapsed.as_secs_f64().max(1e-9);
    out.say(format_args!(
        "moved {} in {secs:.2} s: {:.1} MB/s, byte-identical, last path: {}",
        human(size),
        size as f64 / secs / 1e6,
        conn.path()
    ));
    out.say(format_args!(
        "the server relayed {} of it (handshake, path negotiation, and the data sent \
         before the direct path opened)",
        human(stats.relay_bytes.saturating_sub(relayed_at_start)),
    ));
    sender.shutdown().await;
    receiver.shutdown().await;
    server.shutdown().await;
    Ok(())
}

async fn receive(node: Node, target: std::path::PathBuf) -> Result<u64> {
    let incoming = loop {
        match node.next_event().await {
            Some(NodeEvent::IncomingConnection(incoming)) => break incoming,
            Some(_) => continue,
            None => bail!("receiver stopped before the connection came"),
        }
    };
    let conn = incoming.accept().await.context("receiver accepting")?;
    let mut stream = conn
        .accept_stream()
        .await
        .context("receiver accepting the stream")?;
    let mut out = tokio::fs::File::create(&target).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await.context("receiving")?;
        if n == 0 {
            break;
        }
        total += n as u64;
        out.write_all(&buf[..n]).await?;
    }
    out.flush().await?;
    conn.close().await;
    Ok(total)
}

fn generate(path: &Path, size: u64) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut rng = rand::thread_rng();
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        rng.fill_bytes(&mut buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read as _;
    let (mut a, mut b) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut x, mut y) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(b.read(&mut y)? == 0);
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// Prints the sender's path changes with how much was sent by then.
async fn report_paths(node: Node, sent: Arc<AtomicU64>, started: Instant, out: Out) {
    while let Some(event) = node.next_event().await {
        if let NodeEvent::PathChanged { path, rtt, .. } = event {
            out.say(format_args!(
                "      path: {path} after {:.1} ms, {} sent by then (rtt {rtt:.1?})",
                started.elapsed().as_secs_f64() * 1e3,
                human(sent.load(Ordering::Relaxed)),
            ));
        }
    }
}

/// Bytes in binary units, for people.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
