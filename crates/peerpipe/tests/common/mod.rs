//! Helpers for the integration tests: a real server on 127.0.0.1:0 and nodes.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use peerpipe::{Connection, Identity, Node, NodeBuilder, NodeEvent, PathKind};
use peerpipe_server::{Config, Server};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The bound on every test.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long a test waits for one expected event.
pub const EVENT_LIMIT: Duration = Duration::from_secs(10);

/// Installs a test-friendly tracing subscriber (RUST_LOG to see more).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Runs a test body with tracing and an overall time limit.
pub async fn bounded<F: Future<Output = Result<()>>>(body: F) -> Result<()> {
    init_tracing();
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .context("the test timed out")?
}

/// A running server and the secret its tokens are minted with.
pub struct TestServer {
    /// The server.
    pub server: Server,
    /// The token secret.
    pub secret: Vec<u8>,
}

/// The server configuration the tests use: loopback, port 0, short time-outs.
pub fn server_config(secret: &[u8], listen: SocketAddr) -> Config {
    let mut config = Config::new(secret.to_vec());
    config.listen = listen;
    config
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with a fresh random secret.
    pub async fn start() -> Result<Self> {
        let secret: [u8; 32] = rand::random();
        Self::start_at(secret.to_vec(), "127.0.0.1:0".parse()?).await
    }

    /// Starts a server on `listen` with `secret`, retrying briefly while the port is busy.
    pub async fn start_at(secret: Vec<u8>, listen: SocketAddr) -> Result<Self> {
        let mut tries = 0;
        loop {
            match Server::bind(server_config(&secret, listen)).await {
                Ok(server) => return Ok(Self { server, secret }),
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!("binding {listen}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context("binding the server"),
            }
        }
    }

    /// Starts a server on 127.0.0.1 port 0 with a fresh random secret, after
    /// `tweak` adjusted its config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Result<Self> {
        let secret: [u8; 32] = rand::random();
        let mut config = server_config(&secret, "127.0.0.1:0".parse()?);
        tweak(&mut config);
        let server = Server::bind(config).await.context("binding the server")?;
        Ok(Self {
            server,
            secret: secret.to_vec(),
        })
    }

    /// A builder for an anonymous node (no token) with short time-outs.
    pub fn anonymous_builder(&self, label: &str) -> NodeBuilder {
        quick_builder(&self.url(), label)
    }

    /// A bound anonymous node.
    pub async fn anonymous(&self, label: &str) -> Result<Node> {
        self.anonymous_builder(label)
            .bind()
            .await
            .with_context(|| format!("binding anonymous node {label}"))
    }

    /// The signaling URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A token for `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        token_with(&self.secret, user, unix_now() + 3600)
    }

    /// A node builder for `user` with short time-outs for tests.
    pub fn builder(&self, user: &str, label: &str) -> NodeBuilder {
        builder(&self.url(), &self.token(user), label)
    }

    /// A bound node of `user`.
    pub async fn node(&self, user: &str, label: &str) -> Result<Node> {
        self.builder(user, label)
            .bind()
            .await
            .with_context(|| format!("binding node {label}"))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A token for `user` signed with `secret`, expiring at `expires_at`.
pub fn token_with(secret: &[u8], user: &str, expires_at: u64) -> String {
    peerpipe_proto::token::mint(secret, user, expires_at).expect("minting a token")
}

/// A node builder with a random identity and short time-outs.
pub fn builder(url: &str, token: &str, label: &str) -> NodeBuilder {
    quick_builder(url, label).token(token)
}

/// A fresh identity on `url` with short time-outs, without a token.
fn quick_builder(url: &str, label: &str) -> NodeBuilder {
    Node::builder()
        .server(url)
        .identity(Identity::from_secret_bytes(rand::random()))
        .label(label)
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(5))
        .confirm_timeout(Duration::from_secs(10))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(400))
}

/// Waits for the first event `pick` maps to `Some`, skipping others.
pub async fn wait_for<T>(
    node: &Node,
    what: &str,
    mut pick: impl FnMut(NodeEvent) -> Option<T>,
) -> Result<T> {
    let search = async {
        loop {
            match node.next_event().await {
                Some(event) => {
                    tracing::debug!(node = %node.id().short(), "event: {event:?}");
                    if let Some(found) = pick(event) {
                        return Ok(found);
                    }
                }
                None => bail!("node stopped while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(EVENT_LIMIT, search)
        .await
        .with_context(|| format!("waiting for {what}"))?
}

/// Asserts that no event `pick` matches arrives within `within`.
pub async fn expect_none(
    node: &Node,
    within: Duration,
    mut matches: impl FnMut(&NodeEvent) -> bool,
) -> Result<()> {
    let search = async {
        while let Some(event) = node.next_event().await {
            if matches(&event) {
                return Some(event);
            }
        }
        None
    };
    match tokio::time::timeout(within, search).await {
        Ok(Some(event)) => bail!("unexpected event {event:?}"),
        _ => Ok(()),
    }
}

/// Connects `from` to `to` and accepts on `to`: both ends of a new connection.
pub async fn pair(from: &Node, to: &Node) -> Result<(Connection, Connection)> {
    let target = to.id();
    let connecting = {
        let from = from.clone();
        tokio::spawn(async move { from.connect(target).await })
    };
    let incoming = wait_for(to, "an incoming connection", |e| match e {
        NodeEvent::IncomingConnection(i) => Some(i),
        _ => None,
    })
    .await?;
    anyhow::ensure!(
        incoming.peer().id == from.id(),
        "incoming from the wrong peer"
    );
    let accepted = incoming.accept().await.context("accepting")?;
    let connected = connecting.await?.context("connecting")?;
    anyhow::ensure!(connected.session_id() == accepted.session_id());
    Ok((connected, accepted))
}

/// Sends `len` pattern bytes on a new stream from `from`, reads the stream to its
/// end on `to` and checks every byte.
pub async fn stream_transfer(from: &Connection, to: &Connection, len: usize) -> Result<()> {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut out = from.open_stream().await?;
    let writer = tokio::spawn(async move {
        out.write_all(&data).await?;
        out.shutdown().await?;
        anyhow::Ok(data)
    });
    let mut stream = to.accept_stream().await?;
    let mut got = Vec::with_capacity(len);
    stream.read_to_end(&mut got).await?;
    let data = writer.await??;
    anyhow::ensure!(got == data, "the received bytes differ");
    Ok(())
}

/// Waits until `node` reports `conn` on a path of `kind`; returns how long that took.
pub async fn wait_path(node: &Node, conn: &Connection, kind: PathKind) -> Result<Duration> {
    let started = std::time::Instant::now();
    let session = conn.session_id();
    wait_for(node, &format!("the {kind} path"), |e| match e {
        NodeEvent::PathChanged {
            path, session: s, ..
        } if path == kind && s == session => Some(()),
        _ => None,
    })
    .await?;
    Ok(started.elapsed())
}

/// Two nodes of user `alice` with QUIC off and a connection between them
/// (dialer end first) that both have reported on the direct WebRTC path.
pub async fn direct_pair(server: &TestServer) -> Result<(Node, Node, Connection, Connection)> {
    let a = server.builder("alice", "a").quic(false).bind().await?;
    let b = server.builder("alice", "b").quic(false).bind().await?;
    let (to_b, from_a) = pair(&a, &b).await?;
    wait_path(&a, &to_b, PathKind::WebRtc).await?;
    wait_path(&b, &from_a, PathKind::WebRtc).await?;
    Ok((a, b, to_b, from_a))
}

/// Two nodes of user `alice` and a connection between them (dialer end first) that
/// both have reported on the QUIC path.
pub async fn quic_pair(server: &TestServer) -> Result<(Node, Node, Connection, Connection)> {
    let a = server.node("alice", "a").await?;
    let b = server.node("alice", "b").await?;
    let (to_b, from_a) = pair(&a, &b).await?;
    wait_path(&a, &to_b, PathKind::Quic).await?;
    wait_path(&b, &from_a, PathKind::Quic).await?;
    Ok((a, b, to_b, from_a))
}

/// Fills `buf` with the bytes at `at..` of a long test stream: each byte
/// depends on its position, so a lost, repeated or reordered chunk shows.
pub fn fill_pattern(buf: &mut [u8], at: u64) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = ((at + k as u64).wrapping_mul(2_654_435_761) >> 13) as u8;
    }
}

/// Writes `len` bytes of [`fill_pattern`] to `out` in `chunk`-byte writes, then
/// ends the stream.
pub fn spawn_pattern_writer(
    mut out: peerpipe::Stream,
    len: u64,
    chunk: usize,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let mut buf = vec![0; chunk];
        let mut at = 0;
        while at < len {
            let n = chunk.min((len - at) as usize);
            fill_pattern(&mut buf[..n], at);
            out.write_all(&buf[..n]).await?;
            at += n as u64;
        }
        out.shutdown().await?;
        Ok(())
    })
}

/// Set in the environment of a test re-run inside its own network namespace.
const IN_NETNS: &str = "PEERPIPE_TEST_IN_NETNS";

/// Runs test `name` of this test binary again inside a fresh user and network
/// namespace (`unshare -rn`, loopback up) and returns `true` with its outcome;
/// returns `false` when this process already is that re-run.
pub fn rerun_in_netns(name: &str) -> Result<bool> {
    if std::env::var_os(IN_NETNS).is_some() {
        run("ip", &["link", "set", "lo", "up"])?;
        return Ok(false);
    }
    let exe = std::env::current_exe()?;
    let status = std::process::Command::new("unshare")
        .args(["-rn"])
        .arg(exe)
        .args([name, "--exact", "--ignored", "--nocapture"])
        .env(IN_NETNS, "1")
        .status()
        .context("running unshare -rn")?;
    anyhow::ensure!(
        status.success(),
        "the test inside the namespace failed: {status}"
    );
    Ok(true)
}

/// Runs a command to its end; an error unless it succeeds.
pub fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| format!("running {cmd}"))?;
    anyhow::ensure!(status.success(), "{cmd} {args:?}: {status}");
    Ok(())
}

/// Runs `body` on a fresh two-thread runtime with tracing and a time limit.
pub fn block_on_bounded<F: Future<Output = Result<()>>>(limit: Duration, body: F) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            init_tracing();
            tokio::time::timeout(limit, body)
                .await
                .context("the test timed out")?
        })
}

/// A fresh directory under the system temp dir, removed with everything in it
/// when dropped (also when a test fails or times out).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Creates `peerpipe-<tag>-<random>` in the temp dir.
    pub fn new(tag: &str) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("peerpipe-{tag}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` pseudo-random bytes (splitmix64 from `seed`): incompressible test content.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every entry below `dir`, by `/`-separated relative path, without following
/// links: `true` for a regular file, `false` for anything else that is not a
/// directory (directories are descended into and not listed).
pub fn list_tree(dir: &std::path::Path) -> Result<std::collections::BTreeMap<String, bool>> {
    fn walk(
        dir: &std::path::Path,
        prefix: &str,
        out: &mut std::collections::BTreeMap<String, bool>,
    ) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&entry.path(), &rel, out)?;
            } else {
                out.insert(rel, kind.is_file());
            }
        }
        Ok(())
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, "", &mut out)?;
    Ok(out)
}

/// Reads `node`'s events until it stops: accepts every incoming connection for
/// [`peerpipe::share::SERVICE`] (rejects others), answers its share requests
/// from `library` and hands it to `on_conn`. Runs in a span named `name`.
pub fn spawn_share_acceptor(
    node: Node,
    library: peerpipe::share::Library,
    name: &str,
    on_conn: impl Fn(Connection) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    use tracing::Instrument as _;
    let on_conn = std::sync::Arc::new(on_conn);
    let run = async move {
        while let Some(event) = node.next_event().await {
            let NodeEvent::IncomingConnection(incoming) = event else {
                continue;
            };
            if incoming.service() != Some(peerpipe::share::SERVICE) {
                tracing::warn!("rejecting a connection for {:?}", incoming.service());
                incoming.reject().await;
                continue;
            }
            let (library, on_conn) = (library.clone(), on_conn.clone());
            let accept = async move {
                match incoming.accept().await {
                    Ok(conn) => {
                        tokio::spawn(peerpipe::share::serve(conn.clone(), library));
                        on_conn(conn);
                    }
                    Err(e) => tracing::warn!("accepting a share connection: {e}"),
                }
            };
            tokio::spawn(accept.in_current_span());
        }
    };
    tokio::spawn(run.instrument(tracing::info_span!("peer", peer = name)))
}
