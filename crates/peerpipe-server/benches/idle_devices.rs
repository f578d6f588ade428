//! Server memory per idle admitted device (issue 19, finding 5).
//!
//! `cargo bench -p peerpipe-server --bench idle_devices` starts the server (this
//! binary, built with the bench profile, re-run as a child process so that its
//! RSS is the server's alone), admits 1,000 then 10,000 idle devices from this
//! process (users of 8 devices each; each completes the challenge and hello,
//! then sends and reads nothing), and prints the server's RSS (`VmRSS` of the
//! child) per idle device at both counts and after they all left, next to the
//! 137 KiB per device measured before the WebSocket buffers were sized for
//! idle. `PEERPIPE_BENCH_DEVICES=N` sets the larger count. Then presence at
//! scale (finding 4): 1,000 devices of one user join at once, and it prints how
//! long until each has heard of all others, the online events that took, and
//! the server's CPU time and memory for it.
//!
//! The process needs an open-file limit above the larger count (10,000 client
//! sockets here, 10,000 in the child).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt as _, StreamExt as _};
use peerpipe_proto::id::{DeviceId, Identity};
use peerpipe_proto::signal::{ClientMessage, ServerMessage, hello_payload};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Set in the child: serve with this hex secret.
const SERVE_ENV: &str = "PEERPIPE_BENCH_IDLE_SERVE";
/// Per idle device before this change, measured with the release binary.
const BEFORE_KIB: f64 = 137.0;
const DEVICES_PER_USER: usize = 8;
/// Devices of the one user that joins all at once in the presence part.
const CROWD: usize = 1_000;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn main() -> Result<()> {
    if let Ok(secret) = std::env::var(SERVE_ENV) {
        return serve(&secret);
    }
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let large: usize = std::env::var("PEERPIPE_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(large))
}

/// The child: a server on a free loopback port, printed on stdout.
fn serve(secret_hex: &str) -> Result<()> {
    let secret: Vec<u8> = (0..secret_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&secret_hex[i..i + 2], 16))
        .collect::<Result<_, _>>()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut config = peerpipe_server::Config::new(secret);
            config.listen = "127.0.0.1:0".parse()?;
            config.max_connections = 19_000;
            config.max_connections_per_ip = 19_000;
            config.max_devices_per_user = CROWD;
            // Idle devices here answer no pings: keep them admitted.
            config.idle_timeout = Duration::from_secs(3600);
            let server = peerpipe_server::Server::bind(config).await?;
            println!("{}", server.local_addr());
            peerpipe_server::serve_until_signal(server).await;
            anyhow::Ok(())
        })
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// Admits one device of `user`; returns its socket and the peers its welcome
/// listed.
async fn admit(url: &str, secret: &[u8], user: &str) -> Result<(Ws, Vec<DeviceId>)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        bail!("no challenge");
    };
    let ServerMessage::Challenge { nonce } = ServerMessage::decode(t.as_str())? else {
        bail!("expected a challenge");
    };
    let nonce: [u8; 32] = URL_SAFE_NO_PAD
        .decode(nonce)?
        .try_into()
        .map_err(|_| anyhow!("nonce length"))?;
    let id = Identity::from_secret_bytes(rand::random());
    let token = peerpipe_proto::token::mint(secret, user, u64::MAX / 2)?;
    let signature = URL_SAFE_NO_PAD.encode(id.sign(&hello_payload(&nonce, &token)));
    let hello = ClientMessage::Hello {
        token,
        device: id.device_id(),
        signature,
        label: "idle".into(),
    };
    ws.send(Message::text(hello.encode())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match ServerMessage::decode(t.as_str())? {
                ServerMessage::Welcome { peers, .. } => {
                    return Ok((ws, peers.into_iter().map(|p| p.id).collect()));
                }
                ServerMessage::PeerOnline { .. } => {}
                other => bail!("expected a welcome, got {other:?}"),
            },
            Some(Ok(_)) => {}
            other => bail!("no welcome: {other:?}"),
        }
    }
}

/// Admits devices `from..to` (8 per user), 100 at a time.
async fn admit_range(url: &str, secret: &[u8], from: usize, to: usize) -> Result<Vec<Ws>> {
    let mut out = Vec::with_capacity(to - from);
    let mut i = from;
    while i < to {
        let end = (i + 100).min(to);
        let batch = (i..end).map(|n| {
            let user = format!("user{}", n / DEVICES_PER_USER);
            async move { Ok::<_, anyhow::Error>(admit(url, secret, &user).await?.0) }
        });
        out.extend(futures_util::future::try_join_all(batch).await?);
        i = end;
    }
    Ok(out)
}

async fn settle(pid: u32) -> Result<u64> {
    // Let the writers flush the last presence news, and the server trim its
    // heaps once arrivals stop (it looks every second).
    tokio::time::sleep(Duration::from_secs(4)).await;
    rss_kib(pid)
}

/// CPU time the child has used (user + system, all threads).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses: utime is the 12th.
    let rest = stat.rsplit_once(')').context("no command in stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).context("no utime")?.parse::<f64>()?
        + fields.get(12).context("no stime")?.parse::<f64>()?;
    let hz = Command::new("getconf").arg("CLK_TCK").output()?;
    let hz: f64 = String::from_utf8_lossy(&hz.stdout).trim().parse()?;
    Ok(ticks / hz)
}

/// Presence at scale: [`CROWD`] devices of one user join at once; times until
/// every device has heard of every other (from its welcome or an online event)
/// and prints the server's CPU time and memory for it.
async fn crowd(url: &str, secret: &[u8], pid: u32) -> Result<()> {
    let base = rss_kib(pid)?;
    let cpu = cpu_seconds(pid)?;
    let start = Instant::now();
    let progress: std::sync::Arc<Vec<std::sync::atomic::AtomicUsize>> =
        std::sync::Arc::new((0..CROWD).map(|_| Default::default()).collect());
    let devices = (0..CROWD).map(|i| {
        let progress = progress.clone();
        let url = url.to_owned();
        let secret = secret.to_vec();
        let device = tokio::spawn(async move {
            let (mut ws, peers) = admit(&url, &secret, "crowd").await?;
            let mut known: std::collections::HashSet<DeviceId> = peers.into_iter().collect();
            progress[i].store(known.len(), std::sync::atomic::Ordering::Relaxed);
            let mut events = 0usize;
            while known.len() < CROWD - 1 {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        if let ServerMessage::PeerOnline { peer } =
                            ServerMessage::decode(t.as_str())?
                        {
                            events += 1;
                            known.insert(peer.id);
                            progress[i].store(known.len(), std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Some(Ok(_)) => {}
                    other => bail!("a crowd device lost its link: {other:?}"),
                }
            }
            anyhow::Ok((ws, events))
        });
        async move { device.await? }
    });
    let joined = tokio::time::timeout(
        Duration::from_secs(120),
        futures_util::future::try_join_all(devices),
    )
    .await
    .with_context(|| {
        let known: Vec<usize> = progress.iter().map(|k| k.load(std::sync::atomic::Ordering::Relaxed)).collect();
        let done = known.iter().filter(|&&k| k == CROWD - 1).count();
        format!(
            "the crowd did not hear of each other in 120 s: {done} of {CROWD} did; the others knew {:?}",
            known.iter().filter(|&&k| k < CROWD - 1).take(20).collect::<Vec<_>>()
        )
    })??;
    let elapsed = start.elapsed();
    let cpu = cpu_seconds(pid)? - cpu;
    let rss = settle(pid).await?;
    let mut events = 0;
    let mut sockets = Vec::with_capacity(CROWD);
    for (ws, n) in joined {
        events += n;
        sockets.push(ws);
    }
    println!(
        "one user of {CROWD} devices joining at once: all {CROWD} heard of all others in \
         {:.2} s ({events} online events besides the welcomes' lists, none dropped); \
         server CPU {cpu:.2} s, RSS +{} KiB ({:.1} KiB per device)",
        elapsed.as_secs_f64(),
        rss.saturating_sub(base),
        rss.saturating_sub(base) as f64 / CROWD as f64
    );
    drop(sockets);
    Ok(())
}

async fn bench(large: usize) -> Result<()> {
    let secret: [u8; 32] = rand::random();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new(std::env::current_exe()?)
        .env(SERVE_ENV, hex)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("child stdout")?).read_line(&mut line)?;
    let url = format!("ws://{}/v1/signal", line.trim());
    let result = async {
        // One device first, so that the baseline has the server's lazy
        // start-up allocations (the runtime's, the first TLS-less upgrade).
        let warm = admit_range(&url, &secret, large + 1, large + 2).await?;
        drop(warm);
        let base = settle(pid).await?;
        println!("server RSS at start: {base} KiB");
        let mut rows = Vec::new();
        let start = Instant::now();
        let mut devices = admit_range(&url, &secret, 0, 1_000.min(large)).await?;
        let at_small = settle(pid).await?;
        rows.push((devices.len(), at_small, start.elapsed()));
        devices.extend(admit_range(&url, &secret, devices.len(), large).await?);
        let at_large = settle(pid).await?;
        rows.push((devices.len(), at_large, start.elapsed()));
        println!("idle devices   server RSS    per device (before: {BEFORE_KIB} KiB)");
        for (n, rss, t) in &rows {
            println!(
                "{n:>12}   {rss:>8} KiB   {:>6.1} KiB   (admitted in {:.1} s)",
                (*rss as f64 - base as f64) / *n as f64,
                t.as_secs_f64()
            );
        }
        let n = devices.len();
        for ws in &mut devices {
            let _ = ws.close(None).await;
        }
        drop(devices);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = settle(pid).await?;
        println!(
            "after all {n} left: {after} KiB, {:.1} KiB per device that left kept \
             (before: 2.48 GB kept after 19,000 left, ~130 KiB each)",
            (after as f64 - base as f64) / n as f64
        );
        crowd(&url, &secret, pid).await
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}
