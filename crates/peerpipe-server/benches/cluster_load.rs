//! Load on a cluster of server nodes sharing one Redis: memory per idle
//! device, Redis traffic at rest, presence fan-out across nodes under churn,
//! and relay throughput on one node and across two.
//!
//! `cargo bench -p peerpipe-server --bench cluster_load` starts a real
//! `redis-server` (`--save '' --appendonly no`, on a free loopback port) and
//! `NODES` nodes (this binary, built with the bench profile, re-run as child
//! processes, each a [`peerpipe_server::Server`] with `redis` set, so that
//! each node's RSS is its own), then client processes (this binary again) that
//! hold the devices' WebSockets: a process may hold at most 20,000 open
//! files, so each client holds at most 15,000. The parent coordinates them
//! over their stdin and stdout, one command and one answer a line. Then:
//!
//! 1. **Admission.** `DEVICES` idle devices, each with its own ed25519 key
//!    and a token, complete the challenge and hello; users of 4 devices, the
//!    4 of a user on different nodes (when there are 4 nodes or more), so
//!    presence crosses nodes. It prints the admission rate, each node's RSS
//!    (`VmRSS`) before and after, and the RSS per admitted device against the
//!    8 KiB target.
//! 2. **Rest.** For `REST_SECS` nothing happens but the nodes' pings and
//!    heartbeats; it prints the Redis commands per device per minute
//!    (`total_commands_processed` of `INFO stats`, less the bench's own
//!    `INFO` commands) and which commands they were.
//! 3. **Churn.** For `CHURN_SECS`, `CHURN` devices a second join and as many
//!    leave (new keys; users of 2 devices whose other device is online on
//!    another node all along, each joiner staying 1 s). It prints the
//!    presence fan-out: from the joiner's hello until the other device gets
//!    `peer_online` for it, and from the joiner's close until `peer_offline`
//!    (p50, p99, max, count) against the 100 ms p99 target.
//! 4. **Relay.** Two pairs of devices of one user, one pair on one node and
//!    one across two nodes, set up a session (connect, incoming, accept,
//!    connected); one side sends `RELAY_MIB` MiB in 16 KiB relay frames, at
//!    most 8 MiB unacknowledged (the receiver credits every 1 MiB), and it
//!    prints the MB/s of both and the ratio cross/same against 0.5. The
//!    nodes' `relay_rate` is raised so that this is the relay path's figure,
//!    not the shaper's (by default a connection relays at most 20,000 frames
//!    a second: 328 MB/s of these).
//! 5. **All leave at once.** The client processes are killed: how long until
//!    every node has its devices offline, and whether the Redis work that
//!    makes holds up the nodes' heartbeats (Redis failures, nodes judged
//!    gone).
//!
//! A summary table ends the report. Targets are reported, not asserted.
//! Every wait has a time-out, and every child process is killed when the
//! bench ends, also on failure; the children exit too when their stdin
//! closes.
//!
//! Sizes come from the environment (defaults in brackets), so that CI can
//! run a small version:
//!
//! - `PEERPIPE_BENCH_CLUSTER_DEVICES` \[100000\]
//! - `PEERPIPE_BENCH_CLUSTER_NODES` \[6\] (at least 2)
//! - `PEERPIPE_BENCH_CLUSTER_CHURN` \[1000\] devices a second (0: no churn)
//! - `PEERPIPE_BENCH_CLUSTER_CHURN_SECS` \[10\]
//! - `PEERPIPE_BENCH_CLUSTER_REST_SECS` \[60\] (0: no rest)
//! - `PEERPIPE_BENCH_CLUSTER_RELAY_MIB` \[256\] (0: no relay)
//! - `PEERPIPE_BENCH_CLUSTER_REDIS_SERVER` \[`redis-server` on `PATH`\]
//! - `PEERPIPE_BENCH_CLUSTER_ONE_NODE_USERS` \[0\]: 1 puts the 4 devices of
//!   a user on one node, for comparison (no stand-ins, no presence across
//!   nodes)
//! - `PEERPIPE_BENCH_CLUSTER_LOG` \[`warn`\]: the nodes' log filter (stderr)
//!
//! For example, a smoke run:
//!
//! ```text
//! PEERPIPE_BENCH_CLUSTER_DEVICES=2000 PEERPIPE_BENCH_CLUSTER_NODES=3 \
//! PEERPIPE_BENCH_CLUSTER_REST_SECS=10 PEERPIPE_BENCH_CLUSTER_RELAY_MIB=64 \
//!   cargo bench -p peerpipe-server --bench cluster_load
//! ```
//!
//! Every node needs an open-file limit above its share of the devices
//! (`DEVICES / NODES`, plus the churn's). Client process `c` connects from
//! 127.0.`c+1`.1 and picks its source ports itself (10000 to 31999): left to
//! the kernel, 100,000 connections from 127.0.0.1 made every `connect`
//! search the ephemeral range, and that search took most of the CPU.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use peerpipe_proto::id::{DeviceId, Identity};
use peerpipe_proto::relay::{HEADER_LEN, encode_frame};
use peerpipe_proto::signal::{ClientMessage, ServerMessage, SessionId, hello_payload};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Set in a node child: serve with this hex secret.
const NODE_ENV: &str = "PEERPIPE_BENCH_CLUSTER_NODE";
/// Set in a client child: admit devices with this hex secret.
const CLIENT_ENV: &str = "PEERPIPE_BENCH_CLUSTER_CLIENT";
/// A node child's Redis URL.
const REDIS_URL_ENV: &str = "PEERPIPE_BENCH_CLUSTER_REDIS_URL";
/// A client child's node URLs, comma-separated.
const URLS_ENV: &str = "PEERPIPE_BENCH_CLUSTER_URLS";
/// A client child's source address (its own, in 127.0.0.0/8).
const SOURCE_ENV: &str = "PEERPIPE_BENCH_CLUSTER_SOURCE";
/// The source ports a client child picks for its sockets (below Linux's
/// ephemeral range, where the listeners' ports are).
const SOURCE_PORTS: std::ops::Range<u16> = 10_000..32_000;

const DEVICES_PER_USER: usize = 4;
/// WebSockets one client process holds at most (the open-file limit is 20,000).
const MAX_PER_CLIENT: usize = 15_000;
/// Admissions one client process has in flight at once.
const IN_FLIGHT: usize = 48;
/// How long a churn device stays online.
const CHURN_LIFE: Duration = Duration::from_secs(1);
/// How long after the last churn event a missing presence event is missed.
const CHURN_GRACE: Duration = Duration::from_secs(10);
const RELAY_PAYLOAD: usize = 16 * 1024;
/// Relayed bytes a sender has unacknowledged at most.
const RELAY_WINDOW: u64 = 8 << 20;
/// The receiver credits the sender every this many bytes.
const CREDIT_EVERY: u64 = 1 << 20;
/// The longest a relay waits for any progress.
const RELAY_STALL: Duration = Duration::from_secs(30);
/// Wait for the servers to write their last news and trim their heaps (they
/// look every second).
const SETTLE: Duration = Duration::from_secs(5);

/// The nodes' `relay_rate`: frames a second one connection may relay.
const RELAY_RATE: u32 = 1_000_000;

const TARGET_KIB: f64 = 8.0;
const TARGET_P99_MS: f64 = 100.0;
const TARGET_RATIO: f64 = 0.5;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn main() -> Result<()> {
    if let Ok(secret) = std::env::var(NODE_ENV) {
        return node(&unhex(&secret)?);
    }
    if let Ok(secret) = std::env::var(CLIENT_ENV) {
        return client(unhex(&secret)?);
    }
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let params = Params::from_env()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(params))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>> {
    ensure!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("not hex"))
        .collect()
}

/// The sizes of a run.
#[derive(Debug, Clone, Copy)]
struct Params {
    devices: usize,
    nodes: usize,
    churn: usize,
    churn_secs: u64,
    rest_secs: u64,
    relay_mib: u64,
    /// The 4 devices of a user on different nodes (else all on one).
    spread: bool,
}

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace(['_', ','], "")
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Params {
    fn from_env() -> Result<Self> {
        let p = Params {
            devices: env_number("PEERPIPE_BENCH_CLUSTER_DEVICES", 100_000)? as usize,
            nodes: env_number("PEERPIPE_BENCH_CLUSTER_NODES", 6)? as usize,
            churn: env_number("PEERPIPE_BENCH_CLUSTER_CHURN", 1_000)? as usize,
            churn_secs: env_number("PEERPIPE_BENCH_CLUSTER_CHURN_SECS", 10)?,
            rest_secs: env_number("PEERPIPE_BENCH_CLUSTER_REST_SECS", 60)?,
            relay_mib: env_number("PEERPIPE_BENCH_CLUSTER_RELAY_MIB", 256)?,
            spread: env_number("PEERPIPE_BENCH_CLUSTER_ONE_NODE_USERS", 0)? == 0,
        };
        ensure!(
            p.nodes >= 2,
            "PEERPIPE_BENCH_CLUSTER_NODES must be at least 2 (presence and relay across nodes)"
        );
        ensure!(
            p.devices >= 1,
            "PEERPIPE_BENCH_CLUSTER_DEVICES must be at least 1"
        );
        Ok(p)
    }
}

// ---------------------------------------------------------------------------
// Child processes

/// A child process spoken to over its stdin, its stdout lines forwarded to a
/// channel shared with its group. Killed on drop.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Proc {
    /// Spawns `cmd`, its stdout lines sent to `tx` tagged with `index` (and
    /// `None` when it closes).
    fn spawn(
        name: String,
        mut cmd: Command,
        index: usize,
        tx: mpsc::UnboundedSender<(usize, Option<String>)>,
    ) -> Result<Proc> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let stdin = child.stdin.take();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((index, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((index, None));
        });
        Ok(Proc { name, child, stdin })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{} does not take commands", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Child processes whose lines arrive on one channel.
struct Group {
    procs: Vec<Proc>,
    rx: mpsc::UnboundedReceiver<(usize, Option<String>)>,
    tx: mpsc::UnboundedSender<(usize, Option<String>)>,
}

impl Group {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Group {
            procs: Vec::new(),
            rx,
            tx,
        }
    }

    fn spawn(&mut self, name: String, cmd: Command) -> Result<()> {
        let index = self.procs.len();
        let p = Proc::spawn(name, cmd, index, self.tx.clone())?;
        self.procs.push(p);
        Ok(())
    }

    fn send_all(&mut self, line: &str) -> Result<()> {
        self.procs.iter_mut().try_for_each(|p| p.send(line))
    }

    /// The next line of any child, within `within`.
    async fn recv(&mut self, within: Duration, what: &str) -> Result<(usize, String)> {
        match timeout(within, self.rx.recv()).await {
            Err(_) => bail!("no {what} within {} s", within.as_secs()),
            Ok(None) => bail!("every child is gone"),
            Ok(Some((i, None))) => {
                let p = &mut self.procs[i];
                let status = p.child.try_wait().ok().flatten();
                bail!(
                    "{} ended while waiting for {what} (exit: {status:?})",
                    p.name
                )
            }
            Ok(Some((i, Some(line)))) => Ok((i, line)),
        }
    }

    /// One answer starting with `word` from every child (its words after the
    /// first), within `within` in all; `progress N` lines go to `progress`.
    async fn answers(
        &mut self,
        word: &str,
        within: Duration,
        mut progress: impl FnMut(usize, u64),
    ) -> Result<Vec<Vec<String>>> {
        let deadline = Instant::now() + within;
        let mut out: Vec<Option<Vec<String>>> = vec![None; self.procs.len()];
        while out.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let (i, line) = self.recv(left, &format!("'{word}' answers")).await?;
            let mut words = line.split(' ').map(str::to_owned);
            match words.next().as_deref() {
                Some("progress") => {
                    let n = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                    progress(i, n);
                }
                Some("error") => {
                    bail!(
                        "{}: {}",
                        self.procs[i].name,
                        words.collect::<Vec<_>>().join(" ")
                    )
                }
                Some(w) if w == word => out[i] = Some(words.collect()),
                _ => bail!("{} said {line:?}, expected '{word}'", self.procs[i].name),
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // All at once: nodes killed one by one would each see the others go.
        for p in &mut self.procs {
            let _ = p.child.kill();
        }
    }
}

// ---------------------------------------------------------------------------
// Redis

/// A redis-server of the bench's own, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl RedisServer {
    async fn start() -> Result<Self> {
        let program = std::env::var("PEERPIPE_BENCH_CLUSTER_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".into());
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            let child = Command::new(&program)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--loglevel", "warning", "--maxclients", "1000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn();
            let child = match child {
                Ok(c) => c,
                Err(e) => bail!(
                    "cannot run {program:?} ({e}): the cluster bench needs a redis-server \
                     (Debian: apt-get install redis-server; or set \
                     PEERPIPE_BENCH_CLUSTER_REDIS_SERVER to its path)"
                ),
            };
            let mut server = RedisServer { child, port };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = server.child.try_wait() {
                    last = Some(anyhow!("{program} exited at start: {status}"));
                    break;
                }
                if let Ok(reply) = redis_command(port, &["PING"]).await
                    && reply == "PONG"
                {
                    return Ok(server);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            last.get_or_insert_with(|| anyhow!("{program} did not answer PING in 10 s"));
        }
        Err(last.unwrap_or_else(|| anyhow!("redis-server did not start")))
    }
}

/// One command over a fresh connection to 127.0.0.1:`port`; the reply as text
/// (a status, a bulk string or an integer). Bounded by 5 s.
async fn redis_command(port: u16, args: &[&str]) -> Result<String> {
    let run = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(cmd.as_bytes()).await?;
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 16 * 1024];
            let n = s.read(&mut chunk).await?;
            ensure!(n > 0, "redis closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&buf[1..eol])?.to_owned();
            match buf[0] {
                b'+' | b':' => return Ok(head),
                b'-' => bail!("redis: {head}"),
                b'$' => {
                    let len: usize = head.parse()?;
                    let start = eol + 2;
                    if buf.len() >= start + len + 2 {
                        return Ok(String::from_utf8_lossy(&buf[start..start + len]).into_owned());
                    }
                }
                other => bail!("unexpected redis reply type {:?}", other as char),
            }
        }
    };
    timeout(Duration::from_secs(5), run)
        .await
        .context("redis did not answer in 5 s")?
}

/// `field:value` lines of an `INFO` section.
fn info_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Calls per command, from `INFO commandstats`.
fn command_calls(text: &str) -> BTreeMap<String, u64> {
    info_fields(text)
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("cmdstat_")?.to_owned();
            let calls = v
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name, calls))
        })
        .collect()
}

/// Redis's `used_memory`, in bytes.
async fn redis_memory(port: u16) -> Result<u64> {
    info_fields(&redis_command(port, &["INFO", "memory"]).await?)
        .get("used_memory")
        .context("no used_memory in INFO memory")?
        .parse()
        .context("used_memory")
}

async fn total_commands(port: u16) -> Result<u64> {
    info_fields(&redis_command(port, &["INFO", "stats"]).await?)
        .get("total_commands_processed")
        .context("no total_commands_processed in INFO stats")?
        .parse()
        .context("total_commands_processed")
}

// ---------------------------------------------------------------------------
// /proc

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

fn clock_ticks() -> Result<f64> {
    let hz = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&hz.stdout).trim().parse()?)
}

/// CPU time a process has used (user + system, all threads), in ticks.
fn cpu_ticks(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses: utime is the 12th.
    let rest = stat.rsplit_once(')').context("no command in stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields.get(11).context("no utime")?.parse::<f64>()?
        + fields.get(12).context("no stime")?.parse::<f64>()?)
}

/// The CPU seconds used so far by the nodes, the clients and Redis.
#[derive(Debug, Clone, Copy)]
struct Used([f64; 3]);

impl Used {
    /// Per second of `secs`, as percent of one core, since `before`.
    fn since(self, before: Used, secs: f64) -> Used {
        Used(std::array::from_fn(|i| {
            (self.0[i] - before.0[i]) / secs * 100.0
        }))
    }

    fn line(self) -> String {
        let [n, c, r] = self.0;
        format!("nodes {n:.0} %, clients {c:.0} %, Redis {r:.0} % of one core")
    }
}

/// The summed CPU seconds of `pids`.
struct Cpu {
    pids: Vec<u32>,
    hz: f64,
}

impl Cpu {
    fn seconds(&self) -> Result<f64> {
        let mut sum = 0.0;
        for &pid in &self.pids {
            sum += cpu_ticks(pid)?;
        }
        Ok(sum / self.hz)
    }
}

// ---------------------------------------------------------------------------
// A device

/// Where a client process's sockets come from: an address of its own and
/// ports it picks itself. Left to the kernel (all from 127.0.0.1, ports from
/// the ephemeral range), `connect` searched for a free port among 100,000
/// sockets, which took most of the machine's CPU and starved the nodes.
struct Source {
    ip: Ipv4Addr,
    next: AtomicU32,
}

impl Source {
    fn new(ip: Ipv4Addr) -> Self {
        Source {
            ip,
            next: AtomicU32::new(rand::random::<u32>()),
        }
    }

    /// A connection to `to` from the next free source port.
    async fn connect(&self, to: SocketAddr) -> Result<TcpStream> {
        let ports = u32::from(SOURCE_PORTS.end - SOURCE_PORTS.start);
        let mut last = None;
        for _ in 0..64 {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % ports;
            let port = SOURCE_PORTS.start + n as u16;
            let socket = TcpSocket::new_v4()?;
            // A port whose last connection is in TIME_WAIT can be used for
            // another destination.
            socket.set_reuseaddr(true)?;
            if let Err(e) = socket.bind(SocketAddr::from((self.ip, port))) {
                last = Some(e);
                continue;
            }
            match socket.connect(to).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                    ) =>
                {
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("no free source port on {} in 64 tries: {last:?}", self.ip)
    }
}

fn small_buffers() -> WebSocketConfig {
    // An idle device's socket holds a 2 KiB read buffer, and writes go out
    // straight (tungstenite's defaults: 128 KiB each).
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(0)
}

/// Admits device `id` of `user` at `url` (from `source`, or as the kernel
/// picks); `before_hello` runs just before the
/// hello is sent. Returns the socket, the peers its welcome listed, and when
/// the hello went out.
async fn admit(
    url: &str,
    source: Option<&Source>,
    secret: &[u8],
    user: &str,
    id: &Identity,
    config: Option<WebSocketConfig>,
    before_hello: impl FnOnce(),
) -> Result<(Ws, Vec<DeviceId>, Instant)> {
    let (mut ws, _) = match source {
        Some(source) => {
            let addr: SocketAddr = url
                .strip_prefix("ws://")
                .and_then(|rest| rest.split('/').next())
                .context("not a ws:// URL")?
                .parse()?;
            let stream = source.connect(addr).await?;
            tokio_tungstenite::client_async_with_config(url, MaybeTlsStream::Plain(stream), config)
                .await?
        }
        None => tokio_tungstenite::connect_async_with_config(url, config, true).await?,
    };
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
    let token = peerpipe_proto::token::mint(secret, user, u64::MAX / 2)?;
    let signature = URL_SAFE_NO_PAD.encode(id.sign(&hello_payload(&nonce, &token)));
    let hello = ClientMessage::Hello {
        token,
        device: id.device_id(),
        signature,
        label: "load".into(),
    };
    before_hello();
    let sent = Instant::now();
    ws.send(Message::text(hello.encode())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match ServerMessage::decode(t.as_str())? {
                ServerMessage::Welcome { peers, .. } => {
                    return Ok((ws, peers.into_iter().map(|p| p.id).collect(), sent));
                }
                ServerMessage::PeerOnline { .. } | ServerMessage::PeerOffline { .. } => {}
                other => bail!("expected a welcome, got {other:?}"),
            },
            Some(Ok(_)) => {}
            other => bail!("no welcome: {other:?}"),
        }
    }
}

/// The next text message, within `within` (binary frames, pings and presence
/// news are skipped).
async fn next_text(ws: &mut Ws, within: Duration, what: &str) -> Result<ServerMessage> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("no {what} within {} s", within.as_secs()))?;
        match m {
            Some(Ok(Message::Text(t))) => match ServerMessage::decode(t.as_str())? {
                ServerMessage::PeerOnline { .. } | ServerMessage::PeerOffline { .. } => {}
                ServerMessage::Error { code, message, .. } => {
                    bail!("error {code} while waiting for {what}: {message}")
                }
                other => return Ok(other),
            },
            Some(Ok(_)) => {}
            other => bail!("the socket ended while waiting for {what}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The node child

fn node(secret: &[u8]) -> Result<()> {
    let redis = std::env::var(REDIS_URL_ENV).context("no Redis URL")?;
    let filter = std::env::var("PEERPIPE_BENCH_CLUSTER_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut config = peerpipe_server::Config::new(secret.to_vec());
        config.listen = "127.0.0.1:0".parse()?;
        // The open-file limit is 20,000, and the server keeps 1/16 of it in
        // reserve: as many connections as fit.
        config.max_connections = 18_750;
        config.max_connections_per_ip = 1_000_000;
        // Measure the relay path, not the per-connection shaper (by default
        // 20,000 frames a second: 328 MB/s of 16 KiB frames).
        config.relay_rate = RELAY_RATE;
        config.redis = Some(redis);
        let server = peerpipe_server::Server::bind(config).await?;
        println!("listening {}", server.local_addr());
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        // Until the parent closes stdin (or goes away).
        while let Some(line) = lines.next_line().await? {
            if line == "stats" {
                let s = server.stats();
                let errors: Vec<String> =
                    s.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "stats {} {} {} {} {}",
                    s.connections,
                    s.devices_online,
                    s.sessions,
                    s.relay_overflows,
                    if errors.is_empty() {
                        "-".into()
                    } else {
                        errors.join(",")
                    }
                );
            }
        }
        drop(server);
        anyhow::Ok(())
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

// ---------------------------------------------------------------------------
// The client child

/// Churn devices waiting for their presence event at their user's other
/// device: when their hello or close went out.
#[derive(Default)]
struct Pending {
    online: Mutex<HashMap<DeviceId, Instant>>,
    offline: Mutex<HashMap<DeviceId, Instant>>,
    online_us: Mutex<Vec<u64>>,
    offline_us: Mutex<Vec<u64>>,
    /// From a joiner's hello to its own welcome.
    welcome_us: Mutex<Vec<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pending {
    fn seen(&self, msg: &ServerMessage) {
        let (waiting, times, id) = match msg {
            ServerMessage::PeerOnline { peer } => (&self.online, &self.online_us, peer.id),
            ServerMessage::PeerOffline { id } => (&self.offline, &self.offline_us, *id),
            _ => return,
        };
        let sent = lock(waiting).remove(&id);
        if let Some(sent) = sent {
            lock(times).push(sent.elapsed().as_micros() as u64);
        }
    }
}

/// A churn user's device that stays online.
struct Anchor {
    user: String,
    node: usize,
    id: DeviceId,
}

struct ClientChild {
    urls: Vec<String>,
    source: Arc<Source>,
    secret: Vec<u8>,
    /// Sockets held open now.
    held: Arc<AtomicUsize>,
    /// Held sockets that ended (the server closed them).
    lost: Arc<AtomicUsize>,
    pending: Arc<Pending>,
    anchors: Vec<Anchor>,
}

/// Reads `ws` until it ends (answering pings), handing presence news to `pending`.
async fn hold(
    mut ws: Ws,
    pending: Option<Arc<Pending>>,
    held: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
) {
    held.fetch_add(1, Ordering::Relaxed);
    while let Some(Ok(m)) = ws.next().await {
        if let (Message::Text(t), Some(p)) = (&m, &pending)
            && let Ok(msg) = ServerMessage::decode(t.as_str())
        {
            p.seen(&msg);
        }
    }
    held.fetch_sub(1, Ordering::Relaxed);
    lost.fetch_add(1, Ordering::Relaxed);
}

fn client(secret: Vec<u8>) -> Result<()> {
    let urls: Vec<String> = std::env::var(URLS_ENV)
        .context("no node URLs")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let source: Ipv4Addr = std::env::var(SOURCE_ENV)
        .context("no source address")?
        .parse()?;
    let mut me = ClientChild {
        urls,
        source: Arc::new(Source::new(source)),
        secret,
        held: Default::default(),
        lost: Default::default(),
        pending: Default::default(),
        anchors: Vec::new(),
    };
    let result = rt.block_on(async {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            let words: Vec<&str> = line.split(' ').collect();
            let answer = match words.as_slice() {
                ["admit", first, count, spread] => {
                    me.admit(first.parse()?, count.parse()?, *spread == "spread")
                        .await
                }
                ["anchors", first, count] => me.add_anchors(first.parse()?, count.parse()?).await,
                ["churn", rate, secs] => me.churn(rate.parse()?, secs.parse()?).await,
                ["status"] => Ok(format!(
                    "status {} {}",
                    me.held.load(Ordering::Relaxed),
                    me.lost.load(Ordering::Relaxed)
                )),
                _ => Err(anyhow!("unknown command {line:?}")),
            };
            match answer {
                Ok(a) => println!("{a}"),
                Err(e) => println!("error {}", format!("{e:#}").replace('\n', " ")),
            }
        }
        anyhow::Ok(())
    });
    // The held sockets close with the process.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

impl ClientChild {
    /// Admits idle devices `first..first + count`: device `d` is of user
    /// `u{d / 4}`, on node `d % nodes` when `spread`, else on node
    /// `(d / 4) % nodes` with its user's other devices.
    async fn admit(&mut self, first: usize, count: usize, spread: bool) -> Result<String> {
        let start = Instant::now();
        let n = self.urls.len();
        let mut ok = 0u64;
        let mut failed = 0usize;
        let mut first_error = None;
        let mut results = futures_util::stream::iter(first..first + count)
            .map(|d| {
                let node = if spread { d } else { d / DEVICES_PER_USER };
                let url = &self.urls[node % n];
                let secret = &self.secret;
                let source = &*self.source;
                async move {
                    let user = format!("u{}", d / DEVICES_PER_USER);
                    let id = Identity::from_secret_bytes(rand::random());
                    timeout(
                        Duration::from_secs(30),
                        admit(
                            url,
                            Some(source),
                            secret,
                            &user,
                            &id,
                            Some(small_buffers()),
                            || {},
                        ),
                    )
                    .await
                    .context("no welcome in 30 s")?
                }
            })
            .buffer_unordered(IN_FLIGHT);
        let mut reported = 0;
        while let Some(r) = results.next().await {
            match r {
                Ok((ws, _, _)) => {
                    tokio::spawn(hold(ws, None, self.held.clone(), self.lost.clone()));
                    ok += 1;
                    if ok - reported >= 1_000 {
                        println!("progress {}", ok - reported);
                        reported = ok;
                    }
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}").replace([' ', '\n'], "_"));
                }
            }
        }
        if ok > reported {
            println!("progress {}", ok - reported);
        }
        Ok(format!(
            "admitted {ok} {failed} {:.3} {}",
            start.elapsed().as_secs_f64(),
            first_error.unwrap_or_else(|| "-".into())
        ))
    }

    /// Admits the anchors of churn users `first..first + count`: user `c{i}`'s
    /// on node `i % nodes`.
    async fn add_anchors(&mut self, first: usize, count: usize) -> Result<String> {
        let n = self.urls.len();
        let mut results = futures_util::stream::iter(first..first + count)
            .map(|i| {
                let url = &self.urls[i % n];
                let secret = &self.secret;
                let source = &*self.source;
                async move {
                    let user = format!("c{i}");
                    let id = Identity::from_secret_bytes(rand::random());
                    let (ws, _, _) = timeout(
                        Duration::from_secs(30),
                        admit(
                            url,
                            Some(source),
                            secret,
                            &user,
                            &id,
                            Some(small_buffers()),
                            || {},
                        ),
                    )
                    .await
                    .context("no welcome in 30 s")??;
                    anyhow::Ok((
                        ws,
                        Anchor {
                            user,
                            node: i % n,
                            id: id.device_id(),
                        },
                    ))
                }
            })
            .buffer_unordered(IN_FLIGHT);
        while let Some(r) = results.next().await {
            let (ws, anchor) = r?;
            tokio::spawn(hold(
                ws,
                Some(self.pending.clone()),
                self.held.clone(),
                self.lost.clone(),
            ));
            self.anchors.push(anchor);
        }
        Ok(format!("anchors {}", self.anchors.len()))
    }

    /// `rate` devices a second join for `secs` seconds (each a new device of
    /// an anchor's user, on another node than the anchor) and each leaves
    /// [`CHURN_LIFE`] after it joined; joins before the window leave in it, so
    /// that as many leave as join within it. Measures the joins and leaves of
    /// the window.
    async fn churn(&mut self, rate: f64, secs: f64) -> Result<String> {
        let n = self.urls.len();
        let life = CHURN_LIFE.as_secs_f64();
        let pre = (rate * life).ceil() as i64;
        let total = (rate * secs).floor() as i64;
        let a = self.anchors.len();
        ensure!(
            a as f64 >= rate * (life + 1.0),
            "{a} anchors are too few for {rate} joins a second"
        );
        let t0 = Instant::now() + CHURN_LIFE + Duration::from_millis(200);
        let end = t0 + Duration::from_secs_f64(secs);
        let mut joiners = Vec::new();
        let stats = Arc::new(ChurnCounts::default());
        for j in -pre..total {
            let k = (j + pre) as usize;
            let anchor = &self.anchors[k % a];
            let node = (anchor.node + 1 + k % (n - 1)) % n;
            let offset = Duration::from_secs_f64(j.unsigned_abs() as f64 / rate);
            let join_at = if j < 0 { t0 - offset } else { t0 + offset };
            let leave_at = join_at + CHURN_LIFE;
            let plan = Joiner {
                url: self.urls[node].clone(),
                source: self.source.clone(),
                secret: self.secret.clone(),
                user: anchor.user.clone(),
                anchor: anchor.id,
                join_at,
                leave_at,
                measure_join: j >= 0,
                measure_leave: leave_at >= t0 && leave_at < end,
            };
            joiners.push(tokio::spawn(plan.run(self.pending.clone(), stats.clone())));
        }
        let all = futures_util::future::join_all(joiners);
        let bound = Duration::from_secs_f64(secs) + CHURN_LIFE * 3 + Duration::from_secs(40);
        if timeout(bound, all).await.is_err() {
            bail!("the churn did not end within {} s", bound.as_secs());
        }
        // Events still on their way.
        let deadline = Instant::now() + CHURN_GRACE;
        while Instant::now() < deadline
            && (!lock(&self.pending.online).is_empty() || !lock(&self.pending.offline).is_empty())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let missed_on = std::mem::take(&mut *lock(&self.pending.online)).len();
        let missed_off = std::mem::take(&mut *lock(&self.pending.offline)).len();
        let on = std::mem::take(&mut *lock(&self.pending.online_us));
        let off = std::mem::take(&mut *lock(&self.pending.offline_us));
        let welcome = std::mem::take(&mut *lock(&self.pending.welcome_us));
        let csv = |v: &[u64]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
            }
        };
        Ok(format!(
            "churn {} {} {} {} {missed_on} {missed_off} {} {} {}",
            pre + total,
            stats.failed.load(Ordering::Relaxed),
            stats.listed.load(Ordering::Relaxed),
            stats.admitted.load(Ordering::Relaxed),
            csv(&on),
            csv(&off),
            csv(&welcome)
        ))
    }
}

#[derive(Default)]
struct ChurnCounts {
    admitted: AtomicUsize,
    failed: AtomicUsize,
    /// Joiners whose welcome listed their user's other device.
    listed: AtomicUsize,
}

/// One churn device's life.
struct Joiner {
    url: String,
    source: Arc<Source>,
    secret: Vec<u8>,
    user: String,
    anchor: DeviceId,
    join_at: Instant,
    leave_at: Instant,
    measure_join: bool,
    measure_leave: bool,
}

impl Joiner {
    async fn run(self, pending: Arc<Pending>, counts: Arc<ChurnCounts>) {
        let id = Identity::from_secret_bytes(rand::random());
        let device = id.device_id();
        tokio::time::sleep_until(self.join_at.into()).await;
        let admitted = timeout(
            Duration::from_secs(20),
            admit(
                &self.url,
                Some(&self.source),
                &self.secret,
                &self.user,
                &id,
                Some(small_buffers()),
                || {
                    if self.measure_join {
                        lock(&pending.online).insert(device, Instant::now());
                    }
                },
            ),
        )
        .await;
        let mut ws = match admitted {
            Ok(Ok((ws, peers, sent))) => {
                counts.admitted.fetch_add(1, Ordering::Relaxed);
                if self.measure_join {
                    lock(&pending.welcome_us).push(sent.elapsed().as_micros() as u64);
                }
                if peers.contains(&self.anchor) {
                    counts.listed.fetch_add(1, Ordering::Relaxed);
                }
                ws
            }
            _ => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                lock(&pending.online).remove(&device);
                return;
            }
        };
        // Online until its time to leave (reading, so pings are answered).
        let stay = async { while let Some(Ok(_)) = ws.next().await {} };
        let _ = tokio::time::timeout_at(self.leave_at.into(), stay).await;
        if self.measure_leave {
            lock(&pending.offline).insert(device, Instant::now());
        }
        let bye = async {
            ws.close(None).await?;
            while let Some(Ok(_)) = ws.next().await {}
            anyhow::Ok(())
        };
        let _ = timeout(Duration::from_secs(5), bye).await;
    }
}

// ---------------------------------------------------------------------------
// The parent

/// Node `i`'s counters, from its `stats` answer.
#[derive(Debug, Default, Clone)]
struct NodeStats {
    connections: u64,
    devices: u64,
    sessions: u64,
    overflows: u64,
    errors: String,
}

async fn node_stats(nodes: &mut Group) -> Result<Vec<NodeStats>> {
    nodes.send_all("stats")?;
    let answers = nodes
        .answers("stats", Duration::from_secs(10), |_, _| {})
        .await?;
    answers
        .into_iter()
        .map(|w| {
            let field = |i: usize| -> Result<u64> { Ok(w.get(i).context("short stats")?.parse()?) };
            Ok(NodeStats {
                connections: field(0)?,
                devices: field(1)?,
                sessions: field(2)?,
                overflows: field(3)?,
                errors: w.get(4).cloned().unwrap_or_default(),
            })
        })
        .collect()
}

/// `GET /metrics` of a node; the value of an unlabelled metric.
async fn node_metric(addr: &str, name: &str) -> Result<u64> {
    let run = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name} in {addr}/metrics"))
    };
    timeout(Duration::from_secs(10), run)
        .await
        .context("/metrics did not answer in 10 s")?
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// Thousands separated by commas.
fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The summary's rows: what, figure, target, verdict.
type Row = (String, String, String, String);

fn row(what: impl Into<String>, figure: impl Into<String>) -> Row {
    (what.into(), figure.into(), String::new(), String::new())
}

/// A running cluster, its clients, and the report so far.
struct Run {
    p: Params,
    secret: [u8; 32],
    redis: RedisServer,
    nodes: Group,
    clients: Group,
    addrs: Vec<String>,
    urls: Vec<String>,
    node_pids: Vec<u32>,
    node_cpu: Cpu,
    client_cpu: Cpu,
    redis_cpu: Cpu,
    /// Devices admitted (in all, per the nodes).
    devices: u64,
    rows: Vec<Row>,
}

async fn bench(p: Params) -> Result<()> {
    println!(
        "cluster load: {} devices on {} nodes ({}), churn {}/s for {} s, rest {} s, relay {} MiB",
        num(p.devices as u64),
        p.nodes,
        if p.spread {
            "the 4 devices of a user on different nodes"
        } else {
            "the 4 devices of a user on one node"
        },
        p.churn,
        p.churn_secs,
        p.rest_secs,
        p.relay_mib
    );
    let mut run = Run::start(p).await?;
    run.admission().await?;
    if p.rest_secs > 0 {
        run.rest().await?;
    }
    if p.churn > 0 && p.churn_secs > 0 {
        run.churn().await?;
    }
    if p.relay_mib > 0 {
        run.relay().await?;
    }
    run.summary().await
}

impl Run {
    /// Starts Redis, the nodes (and waits until they see each other) and
    /// the client processes.
    async fn start(p: Params) -> Result<Run> {
        let secret: [u8; 32] = rand::random();
        let exe = std::env::current_exe()?;
        let redis = RedisServer::start().await?;
        let redis_url = format!("redis://127.0.0.1:{}", redis.port);
        println!("redis-server on 127.0.0.1:{}", redis.port);
        let mut nodes = Group::new();
        for i in 0..p.nodes {
            let mut cmd = Command::new(&exe);
            cmd.env(NODE_ENV, hex(&secret))
                .env(REDIS_URL_ENV, &redis_url)
                .env_remove("RUST_LOG")
                .env_remove(CLIENT_ENV);
            nodes.spawn(format!("node {i}"), cmd)?;
        }
        let mut addrs = vec![String::new(); p.nodes];
        for _ in 0..p.nodes {
            let (i, line) = nodes
                .recv(Duration::from_secs(20), "a node's address")
                .await?;
            addrs[i] = line
                .strip_prefix("listening ")
                .with_context(|| format!("node {i} said {line:?}"))?
                .to_owned();
        }
        let urls: Vec<String> = addrs
            .iter()
            .map(|a| format!("ws://{a}/v1/signal"))
            .collect();
        let node_pids: Vec<u32> = nodes.procs.iter().map(Proc::pid).collect();
        // Every node sees the others before devices come.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut all = true;
            for a in &addrs {
                all &= node_metric(a, "peerpipe_cluster_nodes").await? as usize == p.nodes - 1;
            }
            if all {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the nodes did not see each other within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let sockets = p.devices + 4 * p.churn;
        let count = sockets.div_ceil(MAX_PER_CLIENT).max(1);
        let mut clients = Group::new();
        for c in 0..count {
            let mut cmd = Command::new(&exe);
            cmd.env(CLIENT_ENV, hex(&secret))
                .env(URLS_ENV, urls.join(","))
                .env(SOURCE_ENV, format!("127.0.{}.1", c + 1))
                .env_remove(NODE_ENV)
                .env_remove("RUST_LOG");
            clients.spawn(format!("client {c}"), cmd)?;
        }
        let hz = clock_ticks()?;
        let client_cpu = Cpu {
            pids: clients.procs.iter().map(Proc::pid).collect(),
            hz,
        };
        let redis_cpu = Cpu {
            pids: vec![redis.child.id()],
            hz,
        };
        Ok(Run {
            client_cpu,
            redis_cpu,
            p,
            secret,
            redis,
            nodes,
            clients,
            addrs,
            urls,
            node_cpu: Cpu {
                pids: node_pids.clone(),
                hz,
            },
            node_pids,
            devices: 0,
            rows: Vec::new(),
        })
    }

    fn cpu(&self) -> Result<Used> {
        Ok(Used([
            self.node_cpu.seconds()?,
            self.client_cpu.seconds()?,
            self.redis_cpu.seconds()?,
        ]))
    }

    fn rss(&self) -> Result<Vec<u64>> {
        self.node_pids.iter().map(|&pid| rss_kib(pid)).collect()
    }

    /// Idle sockets of the clients that the servers closed.
    async fn lost(&mut self) -> Result<u64> {
        self.clients.send_all("status")?;
        let status = self
            .clients
            .answers("status", Duration::from_secs(10), |_, _| {})
            .await?;
        Ok(status
            .iter()
            .filter_map(|s| s.get(1)?.parse::<u64>().ok())
            .sum())
    }

    /// 1. Admits the idle devices, and prints the rate and the nodes' memory.
    async fn admission(&mut self) -> Result<()> {
        let p = self.p;
        // One device on each node first, so that the baseline has the nodes'
        // lazy start-up allocations (the runtime's, the first upgrade, the
        // links between nodes).
        for (i, url) in self.urls.iter().enumerate() {
            let id = Identity::from_secret_bytes(rand::random());
            let user = format!("warm{}", i / 2);
            let (mut ws, _, _) = admit(url, None, &self.secret, &user, &id, None, || {}).await?;
            let _ = ws.close(None).await;
        }
        tokio::time::sleep(SETTLE).await;
        let rss_before = self.rss()?;
        let redis_before = redis_memory(self.redis.port).await?;

        let clients = self.clients.procs.len();
        let users = p.devices.div_ceil(DEVICES_PER_USER);
        let users_per_client = users.div_ceil(clients);
        let ranges: Vec<(usize, usize)> = (0..clients)
            .map(|c| {
                let first = (c * users_per_client * DEVICES_PER_USER).min(p.devices);
                let end = ((c + 1) * users_per_client * DEVICES_PER_USER).min(p.devices);
                (first, end - first)
            })
            .collect();
        println!(
            "{clients} client processes, at most {} devices each; each node holds about {}",
            num(ranges.iter().map(|r| r.1).max().unwrap_or(0) as u64),
            num(p.devices.div_ceil(p.nodes) as u64)
        );
        println!("\n== admission");
        let cpu = self.cpu()?;
        let start = Instant::now();
        for (c, (first, count)) in ranges.iter().enumerate() {
            let spread = if p.spread { "spread" } else { "together" };
            self.clients.procs[c].send(&format!("admit {first} {count} {spread}"))?;
        }
        let mut admitted = 0u64;
        let mut last_print = Instant::now();
        let within = Duration::from_secs(120) + Duration::from_millis(20) * p.devices as u32;
        let answers = self
            .clients
            .answers("admitted", within, |_, k| {
                admitted += k;
                if last_print.elapsed() >= Duration::from_secs(10) {
                    last_print = Instant::now();
                    let t = start.elapsed().as_secs_f64();
                    println!(
                        "  {:>7} of {} admitted after {t:>5.0} s ({:.0}/s)",
                        num(admitted),
                        num(p.devices as u64),
                        admitted as f64 / t
                    );
                }
            })
            .await?;
        let secs = start.elapsed().as_secs_f64();
        let cpu = self.cpu()?.since(cpu, secs);
        let (mut ok, mut failed) = (0u64, 0u64);
        for (c, a) in answers.iter().enumerate() {
            ok += a.first().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let f = a.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            failed += f;
            if f > 0 {
                println!(
                    "  client {c}: {f} admissions failed, the first: {}",
                    a.get(3).map(|s| s.replace('_', " ")).unwrap_or_default()
                );
            }
        }
        let rate = ok as f64 / secs;
        println!(
            "admitted {} devices in {secs:.1} s: {rate:.0} devices/s overall ({failed} failed)",
            num(ok)
        );
        println!("CPU during admission: {}", cpu.line());
        tokio::time::sleep(SETTLE).await;
        let rss_after = self.rss()?;
        let redis_after = redis_memory(self.redis.port).await?;
        let stats = node_stats(&mut self.nodes).await?;
        let mut stand_ins = Vec::new();
        for a in &self.addrs {
            stand_ins.push(node_metric(a, "peerpipe_cluster_remote_connections").await?);
        }
        println!("node    devices   stand-ins    RSS before     RSS after   per device");
        let mut per_device = Vec::new();
        for i in 0..p.nodes {
            let kib =
                rss_after[i].saturating_sub(rss_before[i]) as f64 / stats[i].devices.max(1) as f64;
            per_device.push(kib);
            println!(
                "{i:>4}   {:>8}   {:>9}   {:>8} KiB   {:>8} KiB   {kib:>6.2} KiB",
                num(stats[i].devices),
                num(stand_ins[i]),
                num(rss_before[i]),
                num(rss_after[i]),
            );
        }
        let before: u64 = rss_before.iter().sum();
        let after: u64 = rss_after.iter().sum();
        self.devices = stats.iter().map(|s| s.devices).sum();
        let kib = after.saturating_sub(before) as f64 / self.devices.max(1) as f64;
        let worst = per_device.iter().copied().fold(0.0, f64::max);
        println!(
            "all    {:>8}   {:>9}   {:>8} KiB   {:>8} KiB   {kib:>6.2} KiB per admitted device",
            num(self.devices),
            num(stand_ins.iter().sum()),
            num(before),
            num(after),
        );
        println!(
            "RSS per admitted device: {kib:.2} KiB (worst node {worst:.2} KiB); \
             target <= {TARGET_KIB} KiB: {}",
            met(kib <= TARGET_KIB)
        );
        let redis_bytes = redis_after.saturating_sub(redis_before) as f64;
        println!(
            "Redis used_memory: +{:.1} MiB ({:.0} bytes per device)",
            redis_bytes / f64::from(1 << 20),
            redis_bytes / self.devices.max(1) as f64
        );
        let client_pids: Vec<u32> = self.clients.procs.iter().map(Proc::pid).collect();
        let client_rss: u64 = client_pids
            .iter()
            .filter_map(|&pid| rss_kib(pid).ok())
            .sum();
        println!(
            "(the client processes hold {} KiB in all, {:.1} KiB per device)",
            num(client_rss),
            client_rss as f64 / ok.max(1) as f64
        );
        self.rows.push(row(
            "admission",
            format!("{rate:.0} devices/s ({} in {secs:.1} s)", num(ok)),
        ));
        self.rows.push((
            "RSS per idle device".into(),
            format!("{kib:.2} KiB (worst node {worst:.2})"),
            format!("<= {TARGET_KIB} KiB"),
            met(kib <= TARGET_KIB).into(),
        ));
        self.rows.push(row(
            "Redis memory per device",
            format!("{:.0} bytes", redis_bytes / self.devices.max(1) as f64),
        ));
        Ok(())
    }

    /// 2. Counts Redis commands while nothing happens.
    async fn rest(&mut self) -> Result<()> {
        let secs = self.p.rest_secs;
        println!("\n== at rest for {secs} s");
        let port = self.redis.port;
        let before = total_commands(port).await?;
        let calls_before = command_calls(&redis_command(port, &["INFO", "commandstats"]).await?);
        let cpu = self.cpu()?;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu = self.cpu()?.since(cpu, secs as f64);
        let after = total_commands(port).await?;
        let calls_after = command_calls(&redis_command(port, &["INFO", "commandstats"]).await?);
        // The INFO stats and INFO commandstats before are counted in `after`.
        let commands = after.saturating_sub(before).saturating_sub(2);
        let per = commands as f64 / self.devices.max(1) as f64 / (secs as f64 / 60.0);
        let mut by: Vec<(String, u64)> = calls_after
            .iter()
            .filter(|(k, _)| k.as_str() != "info")
            .map(|(k, v)| (k.clone(), v - calls_before.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        by.sort_by_key(|b| std::cmp::Reverse(b.1));
        let by: Vec<String> = by
            .iter()
            .map(|(k, v)| format!("{k} {:.1}/s", *v as f64 / secs as f64))
            .collect();
        println!(
            "Redis: {} commands in {secs} s ({:.1}/s): {per:.5} per device per minute",
            num(commands),
            commands as f64 / secs as f64
        );
        println!(
            "  by command (calls from scripts included): {}",
            by.join(", ")
        );
        println!("CPU at rest: {}", cpu.line());
        let lost = self.lost().await?;
        if lost > 0 {
            println!("WARNING: {lost} idle devices were disconnected by the servers");
        }
        self.rows.push(row(
            "Redis at rest",
            format!("{per:.5} commands per device per minute"),
        ));
        self.rows.push(row(
            "nodes' CPU at rest",
            format!("{:.1} % of a core", cpu.0[0]),
        ));
        Ok(())
    }

    /// 3. Joins and leaves at the churn rate; presence fan-out across nodes.
    async fn churn(&mut self) -> Result<()> {
        let p = self.p;
        println!(
            "\n== churn: {}/s join and {}/s leave for {} s (each stays {} s)",
            p.churn,
            p.churn,
            p.churn_secs,
            CHURN_LIFE.as_secs()
        );
        let clients = self.clients.procs.len();
        let rate = p.churn as f64 / clients as f64;
        let anchors = (rate * (CHURN_LIFE.as_secs_f64() + 1.0)).ceil() as usize + 1;
        for c in 0..clients {
            self.clients.procs[c].send(&format!("anchors {} {anchors}", c * anchors))?;
        }
        self.clients
            .answers("anchors", Duration::from_secs(120), |_, _| {})
            .await?;
        println!(
            "{} anchors online (users of 2 devices; the other device joins on another node)",
            num((anchors * clients) as u64)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.clients
            .send_all(&format!("churn {rate} {}", p.churn_secs))?;
        // The CPU of the window itself (the clients start it after the
        // joiners' lifetime and 200 ms; the lines arrive within milliseconds).
        tokio::time::sleep(CHURN_LIFE + Duration::from_millis(200)).await;
        let cpu = self.cpu()?;
        let window = Duration::from_secs(p.churn_secs);
        tokio::time::sleep(window).await;
        let cpu = self.cpu()?.since(cpu, window.as_secs_f64());
        let bound = Duration::from_secs(90);
        let answers = self.clients.answers("churn", bound, |_, _| {}).await?;
        let (mut on, mut off, mut welcome) = (Vec::new(), Vec::new(), Vec::new());
        let mut counts = [0u64; 6];
        for a in &answers {
            for (i, c) in counts.iter_mut().enumerate() {
                *c += a.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
            for (i, v) in [(6, &mut on), (7, &mut off), (8, &mut welcome)] {
                if let Some(csv) = a.get(i).filter(|s| s.as_str() != "-") {
                    v.extend(csv.split(',').filter_map(|x| x.parse::<u64>().ok()));
                }
            }
        }
        let [joiners, failed, listed, joined, missed_on, missed_off] = counts;
        on.sort_unstable();
        off.sort_unstable();
        welcome.sort_unstable();
        println!(
            "{} of {} devices joined ({failed} failed to); {} welcomes listed the user's other device",
            num(joined),
            num(joiners),
            num(listed)
        );
        for (what, v, missed) in [
            ("hello -> peer_online, other node", &on, missed_on),
            ("close -> peer_offline, other node", &off, missed_off),
        ] {
            let (p50, p99, max) = (
                ms(percentile(v, 50.0)),
                ms(percentile(v, 99.0)),
                ms(v.last().copied().unwrap_or(0)),
            );
            let ok = !v.is_empty() && missed == 0 && p99 <= TARGET_P99_MS;
            println!(
                "{what}: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms, {} events, \
                 {missed} missed (target p99 <= {TARGET_P99_MS} ms: {})",
                num(v.len() as u64),
                met(ok)
            );
            self.rows.push((
                format!("{what} (p50/p99/max)"),
                format!(
                    "{p50:.1} / {p99:.1} / {max:.1} ms, n={}, missed {missed}",
                    v.len()
                ),
                format!("p99 <= {TARGET_P99_MS} ms"),
                met(ok).into(),
            ));
        }
        println!(
            "(the joiner's own hello -> welcome: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
            ms(percentile(&welcome, 50.0)),
            ms(percentile(&welcome, 99.0)),
            ms(welcome.last().copied().unwrap_or(0)),
        );
        let late = on
            .iter()
            .filter(|&&us| us > CHURN_LIFE.as_micros() as u64)
            .count();
        if missed_on > 0 {
            println!(
                "({missed_on} peer_online never came: news of a device that went offline \
                 before it was sent is sent as its peer_offline only; {late} of those \
                 that came took over the {} s the joiners stay)",
                CHURN_LIFE.as_secs()
            );
        }
        println!("CPU during churn: {}", cpu.line());
        Ok(())
    }

    /// 4. Relay throughput on one node and across two.
    async fn relay(&mut self) -> Result<()> {
        println!(
            "\n== relay: {} MiB in {} KiB frames, at most {} MiB unacknowledged",
            self.p.relay_mib,
            RELAY_PAYLOAD / 1024,
            RELAY_WINDOW >> 20
        );
        let bytes = self.p.relay_mib << 20;
        let (same, cross) = (
            relay(
                &self.urls[0],
                &self.urls[0],
                &self.secret,
                bytes,
                &self.node_cpu,
            )
            .await?,
            relay(
                &self.urls[0],
                &self.urls[1],
                &self.secret,
                bytes,
                &self.node_cpu,
            )
            .await?,
        );
        for (what, r) in [
            ("same node (0 -> 0): ", same),
            ("cross-node (0 -> 1):", cross),
        ] {
            println!(
                "{what} {:.1} MB/s ({:.2} s; nodes' CPU {:.0} % of one core)",
                r.0, r.1, r.2
            );
        }
        let ratio = cross.0 / same.0;
        println!(
            "cross / same: {ratio:.2} (target >= {TARGET_RATIO}: {})",
            met(ratio >= TARGET_RATIO)
        );
        self.rows
            .push(row("relay same node", format!("{:.1} MB/s", same.0)));
        self.rows
            .push(row("relay cross-node", format!("{:.1} MB/s", cross.0)));
        self.rows.push((
            "relay cross / same".into(),
            format!("{ratio:.2}"),
            format!(">= {TARGET_RATIO}"),
            met(ratio >= TARGET_RATIO).into(),
        ));
        Ok(())
    }

    /// The summary table and what the nodes saw.
    /// A node counter summed over the nodes.
    async fn metric_sum(&self, name: &str) -> Result<u64> {
        let mut sum = 0;
        for a in &self.addrs {
            sum += node_metric(a, name).await?;
        }
        Ok(sum)
    }

    /// Phase 5. Every device leaves at once (the client processes are killed):
    /// how long until the nodes have forgotten them, and whether the Redis
    /// work it makes holds up the heartbeats (a node whose heartbeat lapses
    /// for 3 s is judged gone by the others).
    async fn mass_leave(&mut self) -> Result<()> {
        let stats = node_stats(&mut self.nodes).await?;
        let devices: u64 = stats.iter().map(|s| s.devices).sum();
        println!("\n== all {} devices leave at once", num(devices));
        let errors = self
            .metric_sum("peerpipe_cluster_redis_errors_total")
            .await?;
        let died = self.metric_sum("peerpipe_cluster_nodes_died_total").await?;
        let commands = total_commands(self.redis.port).await?;
        let start = Instant::now();
        drop(std::mem::replace(&mut self.clients, Group::new()));
        let gone = loop {
            let left: u64 = node_stats(&mut self.nodes)
                .await?
                .iter()
                .map(|s| s.devices)
                .sum();
            if left == 0 {
                break Some(start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(120) {
                println!("{} devices still online after 120 s", num(left));
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Past a lease, and until Redis has done what the nodes sent it.
        let mut last = commands;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let now = total_commands(self.redis.port).await?;
            // The bench's own INFO, and the heartbeats (12 a second per node
            // at most).
            if now.saturating_sub(last) <= 1 + 60 * self.p.nodes as u64 || Instant::now() > deadline
            {
                break;
            }
            last = now;
        }
        let settled = start.elapsed();
        let commands = total_commands(self.redis.port).await? - commands;
        let errors = self
            .metric_sum("peerpipe_cluster_redis_errors_total")
            .await?
            - errors;
        let died = self.metric_sum("peerpipe_cluster_nodes_died_total").await? - died;
        let alive = {
            let mut all = true;
            for a in &self.addrs {
                all &= node_metric(a, "peerpipe_cluster_nodes").await? as usize == self.p.nodes - 1;
            }
            all
        };
        let gone = gone.map_or("not within 120 s".into(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        });
        println!(
            "every node had them offline after {gone}; Redis settled after {:.0} s \
             ({} commands)",
            settled.as_secs_f64(),
            num(commands)
        );
        println!(
            "meanwhile: {errors} Redis commands of the nodes failed (time-outs), \
             {died} times a node judged another gone; all nodes see each other now: {}",
            if alive { "yes" } else { "NO" }
        );
        self.rows.push((
            "all leave at once".into(),
            format!("offline everywhere after {gone}, {errors} Redis failures"),
            "nodes judged gone: 0".into(),
            met(died == 0 && alive).into(),
        ));
        Ok(())
    }

    async fn summary(mut self) -> Result<()> {
        // The relay's devices finish closing.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stats = node_stats(&mut self.nodes).await?;
        let lost = self.lost().await?;
        self.mass_leave().await?;
        let errors: Vec<String> = stats
            .iter()
            .enumerate()
            .filter(|(_, s)| s.errors != "-")
            .map(|(i, s)| format!("node {i}: {}", s.errors))
            .collect();
        let overflows: u64 = stats.iter().map(|s| s.overflows).sum();
        println!(
            "\n== summary ({} devices, {} nodes)",
            num(self.p.devices as u64),
            self.p.nodes
        );
        let w0 = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let w1 = self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        let w2 = self.rows.iter().map(|r| r.2.len()).max().unwrap_or(0);
        for (a, b, c, d) in &self.rows {
            println!("{a:<w0$}  {b:<w1$}  {c:<w2$}  {d}");
        }
        println!(
            "idle devices disconnected by the servers: {lost}; relay overflows: {overflows}; \
             before all left: connections open {}, sessions {}",
            num(stats.iter().map(|s| s.connections).sum()),
            stats.iter().map(|s| s.sessions).sum::<u64>()
        );
        println!(
            "error frames sent: {}",
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join("; ")
            }
        );
        // The nodes all at once, then Redis.
        drop(self.nodes);
        drop(self.redis);
        Ok(())
    }
}

/// Relays `bytes` from a device at `from` to a device of the same user at
/// `to`; MB/s, seconds, and the nodes' CPU meanwhile (% of one core).
async fn relay(
    from: &str,
    to: &str,
    secret: &[u8],
    bytes: u64,
    cpu: &Cpu,
) -> Result<(f64, f64, f64)> {
    let rid = Identity::from_secret_bytes(rand::random());
    let sid = Identity::from_secret_bytes(rand::random());
    let (mut receiver, _, _) = admit(to, None, secret, "relay", &rid, None, || {}).await?;
    let (mut sender, _, _) = admit(from, None, secret, "relay", &sid, None, || {}).await?;
    sender
        .send(Message::text(
            ClientMessage::Connect {
                req: 1,
                to: rid.device_id(),
                resume: None,
                service: None,
                door: None,
            }
            .encode(),
        ))
        .await?;
    let session = match next_text(&mut receiver, Duration::from_secs(10), "incoming").await? {
        ServerMessage::Incoming { session, .. } => session,
        other => bail!("expected incoming, got {other:?}"),
    };
    receiver
        .send(Message::text(
            ClientMessage::Accept { req: 2, session }.encode(),
        ))
        .await?;
    match next_text(&mut receiver, Duration::from_secs(10), "accepted").await? {
        ServerMessage::Accepted { .. } => {}
        other => bail!("expected accepted, got {other:?}"),
    }
    match next_text(&mut sender, Duration::from_secs(10), "connected").await? {
        ServerMessage::Connected { session: s, .. } if s == session => {}
        other => bail!("expected connected, got {other:?}"),
    }

    let cpu0 = cpu.seconds()?;
    let start = Instant::now();
    let receiving = tokio::spawn(receive(receiver, session, bytes));
    let (mut sink, mut stream) = sender.split();
    let acked = Arc::new(AtomicU64::new(0));
    let credit = Arc::new(Notify::new());
    let credits = {
        let (acked, credit) = (acked.clone(), credit.clone());
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                match m {
                    Message::Binary(f) if f.len() >= HEADER_LEN + 8 => {
                        let n = u64::from_be_bytes(
                            f[HEADER_LEN..HEADER_LEN + 8].try_into().unwrap_or_default(),
                        );
                        acked.fetch_max(n, Ordering::Relaxed);
                        credit.notify_one();
                    }
                    Message::Text(t) => {
                        if let Ok(ServerMessage::Closed { reason, .. }) =
                            ServerMessage::decode(t.as_str())
                        {
                            return Err(anyhow!("the session closed: {reason:?}"));
                        }
                    }
                    _ => {}
                }
            }
            anyhow::Ok(())
        })
    };
    let frame = Bytes::from(encode_frame(session, &vec![0x5a; RELAY_PAYLOAD]));
    let mut sent = 0u64;
    let mut unflushed = 0;
    while sent < bytes {
        while sent - acked.load(Ordering::Relaxed) >= RELAY_WINDOW {
            if unflushed > 0 {
                sink.flush().await?;
                unflushed = 0;
            }
            let wait = credit.notified();
            if sent - acked.load(Ordering::Relaxed) < RELAY_WINDOW {
                break;
            }
            timeout(RELAY_STALL, wait)
                .await
                .context("no credit from the receiver in 30 s")?;
        }
        sink.feed(Message::Binary(frame.clone())).await?;
        sent += RELAY_PAYLOAD as u64;
        unflushed += 1;
        if unflushed >= 16 {
            sink.flush().await?;
            unflushed = 0;
        }
    }
    sink.flush().await?;
    let received = timeout(RELAY_STALL + Duration::from_secs(bytes >> 24), receiving)
        .await
        .context("the receiver did not get everything in time")???;
    let secs = start.elapsed().as_secs_f64();
    let cpu = (cpu.seconds()? - cpu0) / secs * 100.0;
    credits.abort();
    let _ = sink.close().await;
    Ok((received as f64 / secs / 1e6, secs, cpu))
}

/// Receives `bytes` of payload of `session`, crediting the sender every
/// [`CREDIT_EVERY`] with the count so far; returns the bytes received.
async fn receive(ws: Ws, session: SessionId, bytes: u64) -> Result<u64> {
    let (mut sink, mut stream) = ws.split();
    let mut got = 0u64;
    let mut next_credit = CREDIT_EVERY;
    let run = async {
        while got < bytes {
            let m = timeout(RELAY_STALL, stream.next())
                .await
                .context("the receiver got nothing for 30 s")?;
            match m {
                Some(Ok(Message::Binary(f))) => {
                    got += (f.len() - HEADER_LEN) as u64;
                    if got >= next_credit || got >= bytes {
                        sink.send(Message::Binary(Bytes::from(encode_frame(
                            session,
                            &got.to_be_bytes(),
                        ))))
                        .await?;
                        next_credit = got + CREDIT_EVERY;
                    }
                }
                Some(Ok(Message::Text(t))) => match ServerMessage::decode(t.as_str())? {
                    ServerMessage::Closed { reason, .. } => {
                        bail!("the session closed at the receiver: {reason:?}")
                    }
                    ServerMessage::Error { code, message, .. } => {
                        bail!("error {code} at the receiver: {message}")
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                other => bail!("the receiver's socket ended: {other:?}"),
            }
        }
        anyhow::Ok(got)
    };
    let r = run.await;
    let _ = sink.close().await;
    r
}
