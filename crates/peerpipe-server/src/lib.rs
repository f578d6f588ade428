//! The peerpipe signaling and relay server, as a library.
//!
//! Devices connect over a WebSocket to `/v1/signal`, prove who they are (a token
//! bound to a user, minted with [`peerpipe_proto::token`], plus a signature over a
//! server challenge with the device key), see their user's other devices come and
//! go, negotiate sessions with them and relay binary frames through the server.
//! The server checks every frame, rate-limits control messages, shapes relay
//! traffic, keeps every per-connection queue bounded, and never lets a device learn
//! about another user's devices. A receiver that does not read costs only itself:
//! relayed frames queue per session, within what the session's end-to-end flow
//! control lets its sender have in flight, the sender's link keeps being read, and
//! the receiver is disconnected as a slow consumer if its socket stays stuck.
//!
//! Devices of different users (or anonymous devices, admitted without a token
//! when [`Config::allow_anonymous`] is on) meet through one-time codes: one
//! allocates a nameplate, the other claims it, the two run a PAKE through the
//! server, and while the code is live exactly these two devices may connect to
//! each other. Code operations are rate-limited per source IP (anonymous
//! devices) and per user (devices with a token).
//!
//! `/health` answers `ok`, and `/metrics` serves Prometheus text. With
//! [`Config::web_root`] set, every other path is a file of that directory (the
//! web page), read-only and strictly confined to it.
//!
//! State is in memory: one process serves one site.
//!
//! ```no_run
//! use peerpipe_server::{Config, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let (secret, _created) =
//!     peerpipe_server::load_or_create_secret("server-secret".as_ref())?;
//! let mut config = Config::new(secret);
//! config.listen = "127.0.0.1:0".parse().expect("a socket address");
//! let server = Server::bind(config).await?;
//! println!("devices connect to {}", server.url());
//! // ... later: error `shutting_down` to every device, close, stop listening.
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

mod accept;
mod cluster;
mod conn;
mod hub;
mod limit;
mod memory;
mod metrics;
mod redis;
mod stun;
mod tls;
mod upgrade;
mod web;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use peerpipe_proto::signal::{IceServer, MAX_ICE_SERVERS, MAX_LISTED_PEERS, MAX_TEXT_FRAME};
use peerpipe_proto::token::MIN_SECRET_LEN;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use metrics::Stats;
pub use tls::tls_from_pem_files;

use hub::Hub;

/// How long [`Server::shutdown`] waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Server settings. [`Config::new`] fills in the defaults.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The address to listen on. Default `127.0.0.1:7878`.
    pub listen: SocketAddr,
    /// The HMAC secret tokens are verified with; at least 32 bytes.
    pub secret: Vec<u8>,
    /// The largest binary frame accepted, relay header included. Default 128 KiB.
    /// A larger frame gets error `frame_too_large` and the connection is closed.
    pub max_frame: usize,
    /// Control (text) frames per second a connection may send, sustained. Default 20.
    pub control_rate: u32,
    /// Control frames a connection may send in a burst. Default 50.
    pub control_burst: u32,
    /// Binary frames per second a connection may relay, sustained. Default 20 000.
    /// Excess frames wait (the sender is slowed down); none are dropped.
    pub relay_rate: u32,
    /// Devices one user may have online at once: 1 to
    /// [`MAX_LISTED_PEERS`]. Default 32.
    pub max_devices_per_user: usize,
    /// Time a new connection has to present a valid hello, and to send its
    /// HTTP request head (and finish its TLS handshake). Default 10 s.
    pub handshake_timeout: Duration,
    /// TCP connections open at once (HTTP and WebSocket); lowered at start to
    /// fit below the process's open-file limit. A connection over it gets HTTP
    /// 503 (`GET /health` is still answered). Default 16 384.
    pub max_connections: usize,
    /// TCP connections open at once from one address (an IPv6 /64 counts as
    /// one). A connection over it gets HTTP 429. Default 256. (Behind a reverse
    /// proxy every device has the proxy's address.)
    pub max_connections_per_ip: usize,
    /// Silence (no frame at all, pongs included) after which a connection is
    /// dropped with `idle_timeout`. Default 30 s.
    pub idle_timeout: Duration,
    /// How often the server pings each connection. Default 10 s.
    pub ping_interval: Duration,
    /// Time the target of a connect has to accept or reject it. Default 30 s.
    pub accept_timeout: Duration,
    /// Unused since relayed frames queue per session, in bytes (see
    /// [`Config::relay_session_queue`]); senders no longer wait for a
    /// receiver. Kept so that existing code setting it builds. Default 64.
    pub outbound_queue: usize,
    /// Bytes of relayed frames queued for one session's receiver, each frame
    /// charged its length plus 64 bytes of bookkeeping. A frame over it ends
    /// that session (both devices get `closed` with reason `relay_overflow`;
    /// neither connection closes). Default 17 MiB: a session's receiver
    /// grants at most its largest window of credit beyond what its
    /// application took (`max_window` of the session config, 16 MiB; the
    /// windows start at 1 MiB per stream and 4 MiB per session and grow
    /// only as the reader keeps up), so an honest sender never has more data
    /// than that in flight, wherever it sits; the extra MiB covers the packet
    /// headers (under 1 % of a 16 KiB frame), acknowledgements and pings.
    pub relay_session_queue: usize,
    /// Bytes of relayed frames queued for one connection over all its
    /// sessions (charged as for [`Config::relay_session_queue`]). A frame
    /// over it ends the session it belongs to, as above. Default 64 MiB: four
    /// sessions with their windows full.
    pub relay_connection_queue: usize,
    /// How long a connection's socket may take nothing the server writes
    /// (relayed frames, control messages, pings) before the connection is
    /// closed with `slow_consumer`. Only that connection: the devices that
    /// relay to it are never slowed or closed because of it. Default 30 s.
    pub slow_consumer_timeout: Duration,
    /// STUN/TURN servers announced to every device in its welcome, for direct
    /// paths (at most [`MAX_ICE_SERVERS`]).
    /// Default none.
    pub ice_servers: Vec<IceServer>,
    /// A UDP address to answer STUN binding requests on, so that devices learn
    /// their public address for direct paths (announce it with
    /// [`Config::ice_servers`]). Default none.
    pub stun_listen: Option<SocketAddr>,
    /// Whether devices without a token are admitted. An anonymous device belongs
    /// to no user: it sees no devices, no device sees it, and it can only use
    /// one-time codes (so it is refused too when [`Config::allow_codes`] is off).
    /// Default on.
    pub allow_anonymous: bool,
    /// Whether devices may use one-time codes at all. Default on.
    pub allow_codes: bool,
    /// TLS for every connection (`wss://`, `https://` for `/health` and
    /// `/metrics`), from [`tls_from_pem_files`]. Default none: plain `ws://`,
    /// for loopback or behind a TLS-terminating proxy.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long an allocated nameplate waits for its claim, and how long the two
    /// devices of a claimed code may connect to each other. Default 10 min.
    pub code_ttl: Duration,
    /// Code operations (allocate and claim) per minute from one source IP, for
    /// anonymous devices, sustained. Default 60 (a transfer takes two: the
    /// sender's allocate and the receiver's claim; a wrong guess burns the code). (Behind a reverse proxy every
    /// device has the proxy's address.)
    pub code_rate_per_ip: u32,
    /// Code operations in a burst from one source IP, for anonymous devices.
    /// Default 30.
    pub code_burst_per_ip: u32,
    /// Code operations per minute of one user's devices (with a token), sustained.
    /// Default 120.
    pub code_rate_per_user: u32,
    /// Code operations in a burst of one user's devices. Default 30.
    pub code_burst_per_user: u32,
    /// A directory to serve the web page from: GET and HEAD of any path but
    /// `/v1/signal`, `/health` and `/metrics` answer with a file from it (`/`
    /// and a directory with its `index.html`), other methods get 405. Paths
    /// are checked strictly: a segment that is empty, `.`, `..`, hidden
    /// (starts with `.`), or holds `\`, NUL or an escaped `/`, a file that
    /// is not a regular file or resolves outside the directory (a symlink
    /// out of it), and a file over 64 MiB are not served (404, the last
    /// 500). Every file is sent with `X-Content-Type-Options: nosniff`,
    /// `Referrer-Policy: no-referrer` and `Cache-Control: no-cache`, HTML
    /// and SVG with a `Content-Security-Policy` allowing only the page's own
    /// scripts, styles and wasm, and WebSockets. Files are streamed from
    /// disk, never held whole. Default none: those paths answer 404.
    pub web_root: Option<PathBuf>,
    /// Join a cluster of server nodes that share this Redis
    /// (`redis://[[user]:password@]host[:port][/db]`): devices of every node
    /// see and reach each other as on one server. All nodes need the same
    /// [`Config::secret`]. Default none: a server of its own, state in memory.
    pub redis: Option<String>,
    /// With [`Config::redis`], where to listen for links from the other
    /// nodes. Default: the IP address of [`Config::listen`], any free port.
    pub cluster_listen: Option<SocketAddr>,
    /// With [`Config::redis`], the address other nodes dial to link to this
    /// one. Default: the address [`Config::cluster_listen`] is bound to
    /// (which must then be a specific address, not `0.0.0.0`).
    pub cluster_advertise: Option<SocketAddr>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("secret", &"<redacted>")
            .field("max_frame", &self.max_frame)
            .field("control_rate", &self.control_rate)
            .field("control_burst", &self.control_burst)
            .field("relay_rate", &self.relay_rate)
            .field("max_devices_per_user", &self.max_devices_per_user)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("idle_timeout", &self.idle_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("accept_timeout", &self.accept_timeout)
            .field("outbound_queue", &self.outbound_queue)
            .field("relay_session_queue", &self.relay_session_queue)
            .field("relay_connection_queue", &self.relay_connection_queue)
            .field("slow_consumer_timeout", &self.slow_consumer_timeout)
            .field("stun_listen", &self.stun_listen)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("allow_codes", &self.allow_codes)
            .field("code_ttl", &self.code_ttl)
            .field("code_rate_per_ip", &self.code_rate_per_ip)
            .field("code_burst_per_ip", &self.code_burst_per_ip)
            .field("code_rate_per_user", &self.code_rate_per_user)
            .field("code_burst_per_user", &self.code_burst_per_user)
            .field("web_root", &self.web_root)
            .field("redis", &self.redis.as_ref().map(|_| "<set>"))
            .field("cluster_listen", &self.cluster_listen)
            .field("cluster_advertise", &self.cluster_advertise)
            .field(
                "ice_servers",
                &self.ice_servers.iter().map(|s| &s.url).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Config {
    /// The default settings with the token secret `secret`.
    pub fn new(secret: Vec<u8>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            secret,
            max_frame: 128 * 1024,
            control_rate: 20,
            control_burst: 50,
            relay_rate: 20_000,
            max_devices_per_user: 32,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            max_connections_per_ip: 256,
            idle_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(10),
            accept_timeout: Duration::from_secs(30),
            outbound_queue: 64,
            relay_session_queue: 17 << 20,
            relay_connection_queue: 64 << 20,
            slow_consumer_timeout: Duration::from_secs(30),
            ice_servers: Vec::new(),
            stun_listen: None,
            allow_anonymous: true,
            allow_codes: true,
            tls: None,
            code_ttl: Duration::from_secs(600),
            code_rate_per_ip: 60,
            code_burst_per_ip: 30,
            code_rate_per_user: 120,
            code_burst_per_user: 30,
            web_root: None,
            redis: None,
            cluster_listen: None,
            cluster_advertise: None,
        }
    }

    /// Sets [`Config::allow_anonymous`].
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// Sets [`Config::allow_codes`].
    pub fn allow_codes(mut self, allow: bool) -> Self {
        self.allow_codes = allow;
        self
    }

    /// Sets [`Config::code_ttl`].
    pub fn code_ttl(mut self, ttl: Duration) -> Self {
        self.code_ttl = ttl;
        self
    }

    /// Sets [`Config::code_rate_per_ip`] and [`Config::code_burst_per_ip`].
    pub fn code_rate_per_ip(mut self, per_minute: u32, burst: u32) -> Self {
        self.code_rate_per_ip = per_minute;
        self.code_burst_per_ip = burst;
        self
    }

    /// Sets [`Config::code_rate_per_user`] and [`Config::code_burst_per_user`].
    pub fn code_rate_per_user(mut self, per_minute: u32, burst: u32) -> Self {
        self.code_rate_per_user = per_minute;
        self.code_burst_per_user = burst;
        self
    }

    fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.secret.len() < MIN_SECRET_LEN {
            return invalid(format!(
                "the token secret must have at least {MIN_SECRET_LEN} bytes, got {}",
                self.secret.len()
            ));
        }
        if self.max_frame <= peerpipe_proto::relay::HEADER_LEN {
            return invalid(format!(
                "max_frame must exceed the {}-byte relay header",
                peerpipe_proto::relay::HEADER_LEN
            ));
        }
        if self.code_ttl.is_zero() {
            return invalid("code_ttl must not be zero".into());
        }
        if self.ping_interval.is_zero() || self.idle_timeout.is_zero() {
            return invalid("ping_interval and idle_timeout must not be zero".into());
        }
        if self.relay_session_queue < self.max_frame || self.relay_connection_queue < self.max_frame
        {
            return invalid(format!(
                "relay_session_queue and relay_connection_queue must hold at least one \
                 frame of max_frame ({} bytes)",
                self.max_frame
            ));
        }
        if self.max_devices_per_user == 0 || self.max_devices_per_user > MAX_LISTED_PEERS {
            return invalid(format!(
                "max_devices_per_user must be 1 to {MAX_LISTED_PEERS} (a welcome lists them all)"
            ));
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return invalid("max_connections and max_connections_per_ip must not be zero".into());
        }
        if self.ice_servers.len() > MAX_ICE_SERVERS {
            return invalid(format!("at most {MAX_ICE_SERVERS} ICE servers"));
        }
        for server in &self.ice_servers {
            server
                .check()
                .or_else(|e| invalid(format!("ICE server {:?}: {e}", server.url)))?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct App {
    hub: Arc<Hub>,
    gate: Arc<accept::Gate>,
    shutdown: watch::Receiver<bool>,
    idle: Arc<Notify>,
}

/// A running server. Dropping it without [`Server::shutdown`] also stops it, but
/// without waiting for the connections to close.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    hub: Arc<Hub>,
    shutdown: watch::Sender<bool>,
    idle: Arc<Notify>,
    accept: Option<JoinHandle<()>>,
    stun_addr: Option<SocketAddr>,
    /// Whether connections are TLS (`wss://`).
    tls: bool,
}

impl Server {
    /// Binds `config.listen`, starts accepting connections in the background and
    /// returns. Fails if the address cannot be bound, the config is invalid
    /// (secret shorter than 32 bytes, `max_frame` not above the relay header, zero
    /// ping interval or idle time-out), or [`Config::web_root`] is not a directory.
    pub async fn bind(config: Config) -> io::Result<Server> {
        config.validate()?;
        let web_root = match &config.web_root {
            Some(dir) => Some(Arc::new(web::WebRoot::open(dir).await?)),
            None => None,
        };
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let stun_addr = match config.stun_listen {
            Some(at) => {
                let socket = tokio::net::UdpSocket::bind(at).await?;
                let bound = socket.local_addr()?;
                tokio::spawn(stun::respond(socket, shutdown_rx.clone()));
                tracing::info!(addr = %bound, "answering STUN");
                Some(bound)
            }
            None => None,
        };
        let tls = config.tls.clone();
        let handshake_timeout = config.handshake_timeout;
        let max_connections = accept::fit_to_open_file_limit(config.max_connections);
        if max_connections < config.max_connections {
            tracing::warn!(
                max_connections,
                "connection limit lowered to fit the open-file limit (raise it with ulimit -n)"
            );
        }
        let gate = accept::Gate::new(max_connections, config.max_connections_per_ip);
        let cluster = config.redis.clone().map(|redis| cluster::Settings {
            redis,
            listen: config
                .cluster_listen
                .unwrap_or(SocketAddr::new(addr.ip(), 0)),
            advertise: config.cluster_advertise,
        });
        let hub = Arc::new(Hub::new(config));
        if let Some(settings) = cluster {
            cluster::Cluster::start(&hub, settings, shutdown_rx.clone()).await?;
        }
        let idle = Arc::new(Notify::new());
        let app = App {
            gate: gate.clone(),
            hub: hub.clone(),
            shutdown: shutdown_rx.clone(),
            idle: idle.clone(),
        };
        let mut router = Router::new()
            .route("/v1/signal", get(signal))
            .route("/health", get(|| async { "ok\n" }))
            .route("/metrics", get(metrics_text))
            .with_state(app);
        if let Some(web) = web_root {
            router = router.fallback(move |req: Request| async move { web.serve(req).await });
        }
        tokio::spawn(memory::give_back(hub.clone(), shutdown_rx.clone()));
        let accept = tokio::spawn(accept::run(
            listener,
            accept::Accept {
                router,
                gate,
                tls: tls.clone().map(tokio_rustls::TlsAcceptor::from),
                head_timeout: handshake_timeout,
                stop: shutdown_rx,
            },
        ));
        tracing::info!(%addr, tls = tls.is_some(), "listening");
        Ok(Server {
            addr,
            hub,
            shutdown,
            idle,
            accept: Some(accept),
            stun_addr,
            tls: tls.is_some(),
        })
    }

    /// The address the server listens on (with the actual port if bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The UDP address STUN binding requests are answered on, if
    /// [`Config::stun_listen`] was set (with the actual port if bound to port 0).
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun_addr
    }

    /// The signaling URL devices connect to: `ws://{addr}/v1/signal`, or
    /// `wss://` with [`Config::tls`] (a certificate names a host, not an
    /// address: clients give that name).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/v1/signal", self.addr)
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> Stats {
        self.hub.stats()
    }

    /// Stops the server: every connection gets error `shutting_down` and a close,
    /// the listener stops, and this waits (at most a few seconds) for the
    /// connections to finish writing. The address can be bound again afterwards.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        self.shutdown.send_replace(true);
        let idle = self.idle.clone();
        let hub = self.hub.clone();
        let accept = self.accept.take();
        let all_closed = async move {
            if let Some(accept) = accept {
                let _ = accept.await;
            }
            loop {
                let notified = idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if hub
                    .metrics
                    .connections
                    .load(std::sync::atomic::Ordering::Acquire)
                    == 0
                {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, all_closed)
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

async fn signal(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    if *app.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let accept = match upgrade::accept_key(req.method(), req.headers()) {
        Ok(accept) => accept,
        Err(refusal) => return refusal,
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded\n",
        )
            .into_response();
    };
    let limit = app
        .hub
        .config
        .max_frame
        .max(MAX_TEXT_FRAME)
        .saturating_mul(4);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let halves = upgrade::socket(upgraded, limit).await.split();
                conn::run(app.hub, halves, app.shutdown, app.idle, peer.ip()).await;
            }
            Err(e) => tracing::debug!("WebSocket upgrade failed: {e}"),
        }
    });
    upgrade::switching_protocols(accept)
}

async fn metrics_text(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.hub.render_metrics() + &app.gate.render(),
    )
        .into_response()
}

/// Reads the token secret from `path`, or creates one there if the file does not
/// exist: 32 random bytes stored as 64 hex digits and a newline, readable by the
/// owner only (mode 0600), parent directories created. Returns the secret and
/// whether it was created. A file that is not hex or holds fewer than 32 bytes is
/// an [`io::ErrorKind::InvalidData`] error.
pub fn load_or_create_secret(path: &Path) -> io::Result<(Vec<u8>, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => return parse_secret(&text).map(|s| (s, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let text: String = secret
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        + "\n";
    // Written to a temporary file, then linked into place: a process that starts at
    // the same moment either wins the link or reads the complete file, never half of it.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".secret-{:016x}.tmp", rand::random::<u64>()));
    let linked = write_private(&tmp, text.as_bytes()).and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok((secret.to_vec(), true)),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            parse_secret(&std::fs::read_to_string(path)?).map(|s| (s, false))
        }
        Err(e) => Err(e),
    }
}

/// Creates `path` readable by its owner only, with `bytes`, synced to disk.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    io::Write::write_all(&mut file, bytes)?;
    file.sync_all()
}

fn parse_secret(text: &str) -> io::Result<Vec<u8>> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let hex = text.trim();
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "the secret file must hold the secret as hex digits".into(),
        ));
    }
    let secret: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    if secret.len() < MIN_SECRET_LEN {
        return Err(invalid(format!(
            "the secret file holds {} bytes; a secret needs at least {MIN_SECRET_LEN} \
             (delete the file to have a new one created)",
            secret.len()
        )));
    }
    Ok(secret)
}

/// Runs `server` until SIGINT (Ctrl-C) or SIGTERM, then shuts it down gracefully.
pub async fn serve_until_signal(server: Server) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
    server.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_is_created_then_read_back() {
        let dir = std::env::temp_dir().join(format!("peerpipe-secret-{}", rand::random::<u64>()));
        let path = dir.join("a/b/secret");
        let (s1, created) = load_or_create_secret(&path).unwrap();
        assert!(created);
        assert_eq!(s1.len(), 32);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (s2, created) = load_or_create_secret(&path).unwrap();
        assert!(!created);
        assert_eq!(s1, s2);
        std::fs::write(&path, "abcd\n").unwrap();
        let err = load_or_create_secret(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        std::fs::write(&path, "zz\n").unwrap();
        assert!(load_or_create_secret(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_secret() {
        let dir =
            std::env::temp_dir().join(format!("peerpipe-secret-race-{}", rand::random::<u64>()));
        let path = dir.join("secret");
        let secrets: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || load_or_create_secret(&path).unwrap().0)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(secrets.iter().all(|s| *s == secrets[0]));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary files left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Config::new(vec![1; 31]).validate().is_err());
        assert!(Config::new(vec![1; 32]).validate().is_ok());
    }
}
