//! Path benchmark: throughput, CPU cost and idle memory of `peerpipe`
//! connections through the server's relay and over the direct WebRTC path on
//! loopback, next to raw TCP and a raw WebSocket on loopback in the same run.
//!
//! `cargo bench -p peerpipe-cli --bench relay` prints one table with a row per
//! scenario, all on 127.0.0.1 and in one process (server and both nodes too):
//!
//! - `raw TCP, 256 KiB writes`: a tokio `TcpStream`, `write_all` of 256 KiB
//!   buffers, the reader reads to end of stream. The floor of the machine.
//! - `raw WebSocket, 64 KiB / 64 B messages`: one tungstenite client sending
//!   binary messages to a tungstenite server, one hop. What a relay hop costs
//!   without the server logic and without encryption.
//! - `relay, 64 KiB / 64 B messages`: [`Connection::send`] from node A to node B,
//!   end-to-end encrypted, through the server (two WebSocket hops).
//! - `relay, 64 B confirmed one by one`: [`Connection::send_confirmed`], one
//!   message in flight at a time: a round trip per message.
//! - `relay, N stream(s), 256 KiB writes`: [`peerpipe::Stream`]s on the same
//!   connection, `write_all` of 256 KiB buffers, B reads each to its end; with
//!   several streams they run at once, the bytes are split between them and
//!   MB/s is the aggregate.
//! - `direct, ...`: the same on a connection that moved to the direct path (a
//!   str0m data channel over UDP on 127.0.0.1); the relay rows run with
//!   `PathPolicy::RelayOnly` so that they stay on the relay.
//!
//! Before the table: the direct path's setup time, from `connect` returning (the
//! relay session is up) until both nodes reported `PathChanged { path: Direct }`,
//! over a few fresh connections.
//!
//! Byte-count rows (TCP, streams, 64 KiB messages) all move the same number of
//! bytes. Columns: MB/s is 10^6 bytes per second; `CPU s/GiB` is the process's
//! CPU time (utime + stime from `/proc/self/stat`) during the row divided by the
//! GiB moved. That is the whole process: for relay rows the server and both
//! nodes, so both encryption ends; for raw rows both ends of the socket. Its
//! resolution is one clock tick (10 ms on Linux), so short rows are coarse.
//!
//! After the table: relay / raw WebSocket and stream / raw ratios of MB/s.
//!
//! Then memory per idle connection, once relay-only and once with the default
//! policy (each connection also holds a direct path then): N connections A to B opened one after the
//! other (connect, accept) and held idle, process RSS (`VmRSS` in
//! `/proc/self/status`) 0.5 s before and after, divided by N. Both ends and the
//! server's state are in the process, so that is one session on all three. This
//! part runs in a fresh child process (this executable again): after the
//! transfers the allocator holds enough freed memory that RSS would not grow at
//! all. One connection that takes over a second to open ends the part early
//! and the report says so.
//!
//! The server runs with the relay and control rate limits lifted: the rows measure
//! the nodes and the relay path, not the server's policing.
//!
//! Scale with `PEERPIPE_BENCH_MIB` (bulk MiB, default 512),
//! `PEERPIPE_BENCH_MSGS` (small messages, default 200000; the confirmed row sends
//! a twentieth of it) and `PEERPIPE_BENCH_IDLE` (idle connections, default 200).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use peerpipe::{Connection, Identity, Node, NodeEvent, PathKind, PathPolicy};
use peerpipe_server::{Config, Server};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const BULK_MSG: usize = 64 * 1024;
const SMALL_MSG: usize = 64;
/// The buffer size of byte-stream writes and reads (raw TCP and streams).
const WRITE_BUF: usize = 256 * 1024;
const MIB: u64 = 1024 * 1024;
const GIB: f64 = (1024 * 1024 * 1024) as f64;
/// No scenario may take longer than this: a hang fails the run instead.
const SCENARIO_LIMIT: Duration = Duration::from_secs(300);
/// How long one idle connection may take to set up.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// An idle connection slower than this to open ends the idle part early.
const SLOW_CONNECT: Duration = Duration::from_secs(1);
/// Set in the child process that measures idle memory: `relay` or `direct`.
const IDLE_CHILD: &str = "PEERPIPE_BENCH_IDLE_CHILD";
/// Fresh connections whose direct-path setup time is measured.
const SETUPS: usize = 5;
/// The pause before each RSS reading, for tasks and buffers to settle.
const SETTLE: Duration = Duration::from_millis(500);

struct Row {
    name: String,
    /// Messages sent, or `None` for byte streams.
    messages: Option<u64>,
    bytes: u64,
    elapsed: Duration,
    cpu_ticks: u64,
}

impl Row {
    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs() / 1e6
    }
}

/// Wall-clock and process CPU time from the start of a scenario.
struct Meter {
    started: Instant,
    cpu_ticks: u64,
}

impl Meter {
    fn start() -> Result<Self> {
        Ok(Self {
            cpu_ticks: cpu_ticks()?,
            started: Instant::now(),
        })
    }

    fn finish(self, name: impl Into<String>, messages: Option<u64>, bytes: u64) -> Result<Row> {
        let elapsed = self.started.elapsed();
        Ok(Row {
            name: name.into(),
            messages,
            bytes,
            elapsed,
            cpu_ticks: cpu_ticks()?.saturating_sub(self.cpu_ticks),
        })
    }
}

/// CPU time of the whole process (all threads), user + system, in clock ticks.
fn cpu_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("read /proc/self/stat")?;
    // Fields after the parenthesised command name start with field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .context("no ')' in /proc/self/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("/proc/self/stat is too short")?
            .parse()
            .context("parse /proc/self/stat")
    };
    Ok(field(14)? + field(15)?)
}

/// Clock ticks per second, from `getconf CLK_TCK`; 100 (the Linux value) if that fails.
fn clock_ticks_per_sec() -> (u64, &'static str) {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .map_or((100, "assumed"), |t| (t, "getconf"))
}

/// The process's resident set (`VmRSS` in `/proc/self/status`), in KiB.
fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?;
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("parse VmRSS")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn bounded<T>(what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(SCENARIO_LIMIT, fut)
        .await
        .with_context(|| format!("{what}: no result within {SCENARIO_LIMIT:?}"))?
}

#[tokio::main]
async fn main() -> Result<()> {
    let bulk_mib = env_u64("PEERPIPE_BENCH_MIB", 512).max(1);
    let small = env_u64("PEERPIPE_BENCH_MSGS", 200_000).max(1);
    let idle = env_u64("PEERPIPE_BENCH_IDLE", 200);
    if let Ok(kind) = std::env::var(IDLE_CHILD) {
        let (policy, quic) = match kind.as_str() {
            "relay" => (PathPolicy::RelayOnly, false),
            "direct" => (PathPolicy::Any, false),
            _ => (PathPolicy::Any, true),
        };
        let (server, nodes, _a, _b) = pair(policy, quic).await?;
        println!(
            "{}",
            idle_sessions(&server, &nodes, idle.max(1), &kind).await?
        );
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "{cores} CPUs, load average {} at start; PEERPIPE_BENCH_MIB={bulk_mib} \
         PEERPIPE_BENCH_MSGS={small} PEERPIPE_BENCH_IDLE={idle}",
        load.join(" ")
    );

    let (rows, setups) = throughput(bulk_mib * MIB, small).await?;
    let idle_report = if idle == 0 {
        "idle connections: skipped (PEERPIPE_BENCH_IDLE=0)".to_string()
    } else {
        let mut report = Vec::new();
        for kind in ["relay", "direct", "quic"] {
            report.push(tokio::task::spawn_blocking(move || idle_in_child(kind)).await??);
        }
        report.join("\n")
    };
    for (kind, setups) in &setups {
        print_setups(*kind, setups);
    }
    print_table(&rows);
    println!("\n{idle_report}");
    Ok(())
}

/// Setup times of the direct paths, by kind.
type Setups = Vec<(PathKind, Vec<Duration>)>;

/// Every throughput row, in table order, and the direct-path setup times.
async fn throughput(bulk_bytes: u64, small: u64) -> Result<(Vec<Row>, Setups)> {
    let mut rows = vec![
        bounded("raw TCP", raw_tcp(bulk_bytes)).await?,
        bounded(
            "raw WebSocket bulk",
            raw_ws(
                "raw WebSocket, 64 KiB messages",
                bulk_bytes / BULK_MSG as u64,
                BULK_MSG,
            ),
        )
        .await?,
        bounded(
            "raw WebSocket small",
            raw_ws("raw WebSocket, 64 B messages", small, SMALL_MSG),
        )
        .await?,
    ];

    let (server, nodes, a, b) = pair(PathPolicy::RelayOnly, false).await?;
    rows.extend(path_rows("relay", &a, &b, bulk_bytes, small, &[1, 2, 4]).await?);
    a.close().await;
    for node in nodes {
        node.shutdown().await;
    }
    server.shutdown().await;

    let mut setups = Vec::new();
    for kind in [PathKind::WebRtc, PathKind::Quic] {
        let (kind_rows, kind_setups) = direct_rows(kind, bulk_bytes, small).await?;
        rows.extend(kind_rows);
        setups.push((kind, kind_setups));
    }
    rows.push(bounded("bare quinn", bare_quinn(bulk_bytes)).await?);
    Ok((rows, setups))
}

/// The rows of a direct path kind (`Direct`: WebRTC with QUIC off; `Quic`),
/// and its setup times over a few fresh connections.
async fn direct_rows(
    kind: PathKind,
    bulk_bytes: u64,
    small: u64,
) -> Result<(Vec<Row>, Vec<Duration>)> {
    let (server, nodes, a, b) = pair(PathPolicy::Any, kind == PathKind::Quic).await?;
    let mut setups = Vec::with_capacity(SETUPS);
    for _ in 0..SETUPS {
        let (x, y) = connect_pair(&nodes[0], &nodes[1]).await?;
        let connected = Instant::now();
        bounded("direct setup", async {
            tokio::try_join!(
                wait_direct(&nodes[0], &x, kind, connected),
                wait_direct(&nodes[1], &y, kind, connected)
            )
        })
        .await?;
        setups.push(connected.elapsed());
        x.close().await;
    }
    ensure!(
        a.path() == kind && b.path() == kind,
        "the benchmark connection did not move to the {kind} path"
    );
    let rows = path_rows(&kind.to_string(), &a, &b, bulk_bytes, small, &[1]).await?;
    ensure!(
        a.path() == kind,
        "the connection left the {kind} path during the run"
    );
    a.close().await;
    for node in nodes {
        node.shutdown().await;
    }
    server.shutdown().await;
    Ok((rows, setups))
}

/// The rows of one path kind, named `{path}, ...`.
async fn path_rows(
    path: &str,
    a: &Connection,
    b: &Connection,
    bulk_bytes: u64,
    small: u64,
    stream_counts: &[usize],
) -> Result<Vec<Row>> {
    let bulk_count = bulk_bytes / BULK_MSG as u64;
    let confirmed = (small / 20).max(1);
    let mut rows = vec![
        bounded(
            "bulk messages",
            relay(
                format!("{path}, 64 KiB messages"),
                a,
                b,
                bulk_count,
                BULK_MSG,
            ),
        )
        .await?,
        bounded(
            "small messages",
            relay(format!("{path}, 64 B messages"), a, b, small, SMALL_MSG),
        )
        .await?,
        bounded(
            "confirmed messages",
            relay_confirmed(
                format!("{path}, 64 B confirmed one by one"),
                a,
                b,
                confirmed,
            ),
        )
        .await?,
    ];
    for &n in stream_counts {
        rows.push(bounded("streams", streams(path, a, b, n, bulk_bytes)).await?);
    }
    Ok(rows)
}

/// Waits until `node` reports `conn` on a path of `kind`.
async fn wait_direct(
    node: &Node,
    conn: &Connection,
    kind: PathKind,
    since: Instant,
) -> Result<Duration> {
    let session = conn.session_id();
    loop {
        match node.next_event().await {
            Some(NodeEvent::PathChanged {
                path, session: s, ..
            }) if s == session && path == kind => return Ok(since.elapsed()),
            Some(_) => {}
            None => bail!("the node stopped"),
        }
    }
}

fn print_setups(kind: PathKind, setups: &[Duration]) {
    let mut ms: Vec<f64> = setups.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let list: Vec<String> = ms.iter().map(|m| format!("{m:.1}")).collect();
    println!(
        "\n{kind} path setup after the relay session is up (connect returned -> both nodes \
         on the {kind} path), {} fresh connections: median {:.1} ms ({} ms)",
        ms.len(),
        ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN),
        list.join(", ")
    );
}

fn print_table(rows: &[Row]) {
    let (ticks_per_sec, ticks_source) = clock_ticks_per_sec();
    println!(
        "\n{:<40} {:>9} {:>11} {:>9} {:>8} {:>10}",
        "scenario", "messages", "msg/s", "MB/s", "seconds", "CPU s/GiB"
    );
    for r in rows {
        let (messages, rate) = match r.messages {
            Some(m) => (m.to_string(), format!("{:.0}", m as f64 / r.secs())),
            None => ("-".to_string(), "-".to_string()),
        };
        let cpu = r.cpu_ticks as f64 / ticks_per_sec as f64;
        println!(
            "{:<40} {:>9} {:>11} {:>9.1} {:>8.2} {:>10.2}",
            r.name,
            messages,
            rate,
            r.mb_per_s(),
            r.secs(),
            cpu / (r.bytes as f64 / GIB)
        );
    }
    println!(
        "\nCPU s/GiB: utime + stime of the whole process ({ticks_per_sec} ticks/s, {ticks_source}) \
         while the row ran, per GiB moved;\nrelay rows: server + 2 nodes, both encryption ends; \
         raw rows: both ends of the socket."
    );

    let row = |name: &str| rows.iter().find(|r| r.name.starts_with(name));
    let ratio = |num: &str, den: &str| match (row(num), row(den)) {
        (Some(n), Some(d)) => n.mb_per_s() / d.mb_per_s().max(1e-9),
        _ => f64::NAN,
    };
    println!(
        "\nrelay / raw WebSocket, MB/s: {:.2}x with 64 KiB messages, {:.2}x with 64 B messages",
        ratio("relay, 64 KiB", "raw WebSocket, 64 KiB"),
        ratio("relay, 64 B messages", "raw WebSocket, 64 B"),
    );
    println!(
        "direct 1 stream / raw TCP: {:.2}x, / relay 1 stream: {:.2}x; \
         direct 64 B messages / relay 64 B messages: {:.2}x",
        ratio("direct, 1 stream", "raw TCP"),
        ratio("direct, 1 stream", "relay, 1 stream"),
        ratio("direct, 64 B messages", "relay, 64 B messages"),
    );
    println!(
        "quic 1 stream / bare quinn: {:.2}x, / raw TCP: {:.2}x, / direct 1 stream: {:.2}x; \
         quic 64 B messages / relay 64 B messages: {:.2}x",
        ratio("quic, 1 stream", "bare quinn"),
        ratio("quic, 1 stream", "raw TCP"),
        ratio("quic, 1 stream", "direct, 1 stream"),
        ratio("quic, 64 B messages", "relay, 64 B messages"),
    );
    for n in ["relay, 1 stream", "relay, 2 streams", "relay, 4 streams"] {
        println!(
            "{n:<16} / raw WebSocket 64 KiB: {:.2}x, / raw TCP: {:.2}x, \
             / relay 64 KiB messages: {:.2}x",
            ratio(n, "raw WebSocket, 64 KiB"),
            ratio(n, "raw TCP"),
            ratio(n, "relay, 64 KiB"),
        );
    }
}

/// Writes `total` bytes in `WRITE_BUF` writes, then ends the sending side.
async fn write_bytes(w: &mut (impl AsyncWrite + Unpin), total: u64) -> Result<()> {
    let buf = vec![7u8; WRITE_BUF];
    let mut left = total;
    while left > 0 {
        let n = left.min(WRITE_BUF as u64) as usize;
        w.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    w.shutdown().await?;
    Ok(())
}

/// Reads to the end of the stream; fails if more than `expected` bytes come.
async fn read_to_end(r: &mut (impl AsyncRead + Unpin), expected: u64) -> Result<u64> {
    let mut buf = vec![0u8; WRITE_BUF];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(got);
        }
        got += n as u64;
        ensure!(got <= expected, "read {got} bytes, expected {expected}");
    }
}

/// One TCP connection on loopback carries `total` bytes; the reader reads to EOF.
async fn raw_tcp(total: u64) -> Result<Row> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await?;
        read_to_end(&mut tcp, total).await
    });
    let mut tcp = TcpStream::connect(addr).await?;
    let meter = Meter::start()?;
    write_bytes(&mut tcp, total).await?;
    let got = reader.await??;
    ensure!(got == total, "raw TCP: read {got} of {total} bytes");
    meter.finish("raw TCP, 256 KiB writes", None, total)
}

/// One quinn connection on loopback with peerpipe's QUIC settings (4 MiB
/// socket buffers; 4 MiB stream, 8 MiB connection and send windows; MTU
/// discovery up to 6500 bytes; TLS 1.3 with a self-signed certificate) carries
/// `total` bytes on one stream.
async fn bare_quinn(total: u64) -> Result<Row> {
    use std::sync::Arc;
    let made = rcgen::generate_simple_self_signed(vec!["peerpipe".to_owned()])?;
    let cert = made.cert.der().clone();
    let key = quinn::rustls::pki_types::PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(quinn::VarInt::from_u32(4 << 20))
        .receive_window(quinn::VarInt::from_u32(8 << 20))
        .send_window(8 << 20);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(6500);
    transport.mtu_discovery_config(Some(mtu));
    let transport = Arc::new(transport);
    let mut server_config = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key.into())?;
    server_config.transport_config(transport.clone());
    let mut roots = quinn::rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client_config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    client_config.transport_config(transport);
    let socket = |server: Option<quinn::ServerConfig>| -> Result<quinn::Endpoint> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_recv_buffer_size(4 << 20)?;
        s.set_send_buffer_size(4 << 20)?;
        s.set_nonblocking(true)?;
        s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config.max_udp_payload_size(6500)?;
        Ok(quinn::Endpoint::new(
            endpoint_config,
            server,
            s.into(),
            runtime,
        )?)
    };
    let server = socket(Some(server_config))?;
    let client = socket(None)?;
    let addr = server.local_addr()?;
    let reader = tokio::spawn(async move {
        let incoming = server.accept().await.context("no connection")?;
        let connection = incoming.await?;
        let mut recv = connection.accept_uni().await?;
        let got = read_to_end(&mut recv, total).await?;
        anyhow::Ok((got, server))
    });
    let connection = client
        .connect_with(client_config, addr, "peerpipe")?
        .await?;
    let meter = Meter::start()?;
    let mut send = connection.open_uni().await?;
    write_bytes(&mut send, total).await?;
    let (got, _server) = reader.await??;
    ensure!(got == total, "bare quinn: read {got} of {total} bytes");
    meter.finish("bare quinn, 1 stream, 256 KiB writes", None, total)
}

/// One client streams `count` binary messages to a plain WebSocket sink on loopback.
async fn raw_ws(name: &'static str, count: u64, size: usize) -> Result<Row> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut ws = tokio_tungstenite::accept_async(tcp).await?;
        let mut got = 0u64;
        while got < count {
            match ws.next().await {
                Some(Ok(Message::Binary(_))) => got += 1,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("client went away after {got} messages"),
            }
        }
        ws.send(Message::text("done")).await?;
        anyhow::Ok(())
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
    let payload = Bytes::from(vec![7u8; size]);
    let meter = Meter::start()?;
    for _ in 0..count {
        ws.feed(Message::Binary(payload.clone())).await?;
    }
    ws.flush().await?;
    while let Some(msg) = ws.next().await {
        if matches!(msg?, Message::Text(_)) {
            break;
        }
    }
    let row = meter.finish(name, Some(count), count * size as u64)?;
    sink.await??;
    Ok(row)
}

/// A server, two nodes of one user (kept alive by the caller) and a connection between them.
async fn pair(
    policy: PathPolicy,
    quic: bool,
) -> Result<(Server, Vec<Node>, Connection, Connection)> {
    let secret: [u8; 32] = rand::random();
    let mut config = Config::new(secret.to_vec());
    config.listen = "127.0.0.1:0".parse()?;
    config.relay_rate = u32::MAX;
    // The idle-memory part opens hundreds of connections back to back: each is a
    // control message from both nodes, far past the default 20/s (burst 50).
    config.control_rate = u32::MAX;
    config.control_burst = u32::MAX;
    let server = Server::bind(config).await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = peerpipe_proto::token::mint(&secret, "bench", now + 3600)?;
    let mut nodes = Vec::new();
    for label in ["a", "b"] {
        nodes.push(
            Node::builder()
                .server(server.url())
                .token(token.clone())
                .identity(Identity::from_secret_bytes(rand::random()))
                .label(label.to_string())
                .path_policy(policy)
                .quic(quic)
                .bind()
                .await?,
        );
    }
    let started = Instant::now();
    let (a, b) = connect_pair(&nodes[0], &nodes[1]).await?;
    if policy != PathPolicy::RelayOnly {
        let kind = if quic {
            PathKind::Quic
        } else {
            PathKind::WebRtc
        };
        bounded("the direct path", async {
            tokio::try_join!(
                wait_direct(&nodes[0], &a, kind, started),
                wait_direct(&nodes[1], &b, kind, started)
            )
        })
        .await?;
    }
    Ok((server, nodes, a, b))
}

/// `a` connects to `b`, which accepts: both ends of the new connection.
async fn connect_pair(a: &Node, b: &Node) -> Result<(Connection, Connection)> {
    let accept = async {
        loop {
            match b.next_event().await {
                Some(NodeEvent::IncomingConnection(i)) => {
                    return i.accept().await.context("accept");
                }
                Some(_) => {}
                None => bail!("node b stopped"),
            }
        }
    };
    let connect = async { a.connect(b.id()).await.context("connect") };
    tokio::time::timeout(CONNECT_LIMIT, async { tokio::try_join!(connect, accept) })
        .await
        .context("connect and accept took too long")?
}

async fn relay(
    name: String,
    a: &Connection,
    b: &Connection,
    count: u64,
    size: usize,
) -> Result<Row> {
    let b = b.clone();
    let meter = Meter::start()?;
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        while got < count {
            match b.recv().await? {
                Some(_) => got += 1,
                None => bail!("closed after {got} messages"),
            }
        }
        anyhow::Ok(())
    });
    let payload = Bytes::from(vec![7u8; size]);
    for _ in 0..count {
        a.send(payload.clone()).await?;
    }
    receiver.await??;
    meter.finish(name, Some(count), count * size as u64)
}

async fn relay_confirmed(name: String, a: &Connection, b: &Connection, count: u64) -> Result<Row> {
    let b = b.clone();
    let meter = Meter::start()?;
    let receiver = tokio::spawn(async move {
        for _ in 0..count {
            b.recv().await?.context("closed early")?;
        }
        anyhow::Ok(())
    });
    let payload = Bytes::from(vec![7u8; SMALL_MSG]);
    for _ in 0..count {
        a.send_confirmed(payload.clone()).await?;
    }
    receiver.await??;
    meter.finish(name, Some(count), count * SMALL_MSG as u64)
}

/// `n` streams from A to B at once on the same connection, `total` bytes between them.
async fn streams(path: &str, a: &Connection, b: &Connection, n: usize, total: u64) -> Result<Row> {
    let per_stream = total / n as u64;
    let b = b.clone();
    let meter = Meter::start()?;
    let readers = tokio::spawn(async move {
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let mut stream = b.accept_stream().await?;
            tasks.push(tokio::spawn(async move {
                read_to_end(&mut stream, per_stream).await
            }));
        }
        let mut got = 0u64;
        for task in tasks {
            let bytes = task.await??;
            ensure!(
                bytes == per_stream,
                "a stream read {bytes} of {per_stream} bytes"
            );
            got += bytes;
        }
        anyhow::Ok(got)
    });
    let mut writers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = a.open_stream().await?;
        writers.push(tokio::spawn(async move {
            write_bytes(&mut stream, per_stream).await
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let got = readers.await??;
    let name = match n {
        1 => format!("{path}, 1 stream, 256 KiB writes"),
        n => format!("{path}, {n} streams, 256 KiB writes (sum)"),
    };
    meter.finish(name, None, got)
}

/// Runs the idle-connection part in a fresh child process (this executable with
/// [`IDLE_CHILD`] set) and returns its report. In this process the allocator
/// reuses the freed transfer buffers, so RSS does not grow at all.
fn idle_in_child(kind: &str) -> Result<String> {
    let exe = std::env::current_exe().context("find the benchmark executable")?;
    let out = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(IDLE_CHILD, kind)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run the idle-memory child")?;
    ensure!(
        out.status.success(),
        "the idle-memory child failed: {}",
        out.status
    );
    Ok(String::from_utf8(out.stdout)?.trim_end().to_string())
}

/// Opens up to `count` connections A to B one after the other, holds them idle
/// and reports the process's RSS growth per connection. Stops early when one
/// connection takes longer than [`SLOW_CONNECT`] to open.
async fn idle_sessions(server: &Server, nodes: &[Node], count: u64, kind: &str) -> Result<String> {
    let sessions_before = server.stats().sessions;
    tokio::time::sleep(SETTLE).await;
    let before = rss_kib()?;
    let started = Instant::now();
    let mut held = Vec::with_capacity(2 * count as usize);
    let mut stalled = None;
    for i in 0..count {
        let t0 = Instant::now();
        let (a, b) = connect_pair(&nodes[0], &nodes[1])
            .await
            .with_context(|| format!("idle connection {}", i + 1))?;
        held.push(a);
        held.push(b);
        let took = t0.elapsed();
        if took > SLOW_CONNECT {
            stalled = Some((i + 1, took));
            break;
        }
    }
    let setup = started.elapsed();
    let opened = held.len() as u64 / 2;
    tokio::time::sleep(SETTLE).await;
    let after = rss_kib()?;
    let sessions = server.stats().sessions.saturating_sub(sessions_before);
    let per = after.saturating_sub(before) as f64 / opened as f64;
    let stall = match stalled {
        Some((n, took)) => format!(
            "\n  STALLED: idle connection {n} (each node's connection {}) took {:.2} s \
             to open (limit {SLOW_CONNECT:?}): stopped there, {count} were asked for",
            n + 1,
            took.as_secs_f64()
        ),
        None => String::new(),
    };
    drop(held);
    Ok(format!(
        "idle connections, {kind} (fresh process: server + 2 nodes + their first connection):\n  \
         {opened} opened one after the other in {:.2} s, {sessions} more server sessions{stall}\n  \
         RSS {before} KiB -> {after} KiB: {per:.1} KiB per idle connection \
         (whole process: both ends + server state)",
        setup.as_secs_f64(),
    ))
}
