//! The client commands: `id`, `peers`, `listen`, `connect`.

use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use peerpipe::{DeviceId, Node, NodeEvent, PathPolicy, StreamError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{ClientArgs, ConnectArgs, IdentityArgs, NetArgs, identity};

/// Bytes moved per read between a stream and stdin/stdout.
const COPY_CHUNK: usize = 256 * 1024;
/// Stream stop code: the receiver could not write its output.
const STOP_OUTPUT_FAILED: u32 = 1;

pub fn id(args: &IdentityArgs) -> Result<()> {
    let identity = load_identity(args)?;
    println!("{}", identity.device_id());
    Ok(())
}

pub async fn peers(args: &ClientArgs) -> Result<()> {
    let node = bind(args, Role::ShortLived).await?;
    let peers = node.online_peers().await.context("listing peers")?;
    for peer in &peers {
        println!("{}\t{}", peer.id, peer.label);
    }
    if peers.is_empty() {
        tracing::info!("no other device of this user is online");
    }
    node.shutdown().await;
    Ok(())
}

pub async fn listen(args: &ClientArgs) -> Result<()> {
    let node = bind(args, Role::Holds("listen")).await?;
    let id = node.id();
    tracing::info!("listening as {id}; on another device run: peerpipe connect {id}");
    let incoming = loop {
        match node.next_event().await {
            Some(NodeEvent::IncomingConnection(incoming)) if incoming.service().is_none() => {
                break incoming;
            }
            // A `get` looking for shared files, say: not for us.
            Some(NodeEvent::IncomingConnection(incoming)) => incoming.reject().await,
            Some(NodeEvent::Stopped { error }) => {
                return Err(anyhow::Error::new(error).context("the server link stopped"));
            }
            None => bail!("the node stopped before a connection came in"),
            Some(other) => log_event(&other),
        }
    };
    tracing::info!(
        "connection from {} ({})",
        incoming.peer().id,
        incoming.peer().label
    );
    let conn = incoming
        .accept()
        .await
        .context("accepting the connection")?;
    tokio::spawn(log_events(node.clone()));
    let mut stream = conn
        .accept_stream()
        .await
        .context("waiting for the sender's stream")?;
    let started = Instant::now();
    let mut stdout = tokio::io::stdout();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await.context("receiving")?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if let Err(e) = stdout.write_all(&buf[..n]).await {
            // Tell the sender at once instead of letting it fill the window.
            stream.stop(STOP_OUTPUT_FAILED);
            conn.close().await;
            return Err(e).context("writing to stdout");
        }
    }
    stdout.flush().await.context("writing to stdout")?;
    // Everything is written out: closing tells the sender it may finish.
    conn.close().await;
    report("received", total, started);
    node.shutdown().await;
    Ok(())
}

pub async fn connect(args: &ConnectArgs) -> Result<()> {
    let node = bind(&args.client, Role::ShortLived).await?;
    let peer = resolve_peer(&node, &args.peer).await?;
    tokio::spawn(log_events(node.clone()));
    let conn = node
        .connect(peer)
        .await
        .with_context(|| format!("connecting to {}", peer.short()))?;
    tracing::info!("connected to {} ({})", conn.peer().id, conn.peer().label);
    let mut stream = conn.open_stream().await.context("opening a stream")?;
    let started = Instant::now();
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut total = 0u64;
    loop {
        let n = stdin.read(&mut buf).await.context("reading stdin")?;
        if n == 0 {
            break;
        }
        total += n as u64;
        stream
            .write_all(&buf[..n])
            .await
            .map_err(|e| match StreamError::of(&e) {
                Some(StreamError::Stopped(STOP_OUTPUT_FAILED)) => {
                    anyhow!("the receiver could not write its output and stopped")
                }
                _ => anyhow::Error::new(e).context("sending"),
            })?;
    }
    stream.shutdown().await.context("sending")?;
    // The receiver closes the connection once it has written everything out.
    match conn.recv().await {
        Ok(None) => {}
        Ok(Some(_)) => bail!("the receiver sent a message; is it a `peerpipe listen`?"),
        Err(e) => {
            return Err(e).context("waiting for the receiver to write everything out");
        }
    }
    report("sent", total, started);
    node.shutdown().await;
    Ok(())
}

/// A device named by its full id, or among the online devices by the start of
/// its id (the short id the logs print) or its exact label; an ambiguous or
/// unknown name is an error that lists what is online.
async fn resolve_peer(node: &Node, name: &str) -> Result<DeviceId> {
    if let Ok(id) = name.parse::<DeviceId>() {
        return Ok(id);
    }
    let peers = node.online_peers().await.context("listing peers")?;
    let by_prefix: Vec<_> = peers
        .iter()
        .filter(|p| name.len() >= 4 && p.id.to_string().starts_with(name))
        .collect();
    let matches = if by_prefix.is_empty() {
        peers.iter().filter(|p| p.label == name).collect()
    } else {
        by_prefix
    };
    match matches.as_slice() {
        [one] => Ok(one.id),
        [] => {
            let online: Vec<String> = peers
                .iter()
                .map(|p| format!("{} ({})", p.id.short(), p.label))
                .collect();
            bail!(
                "{name:?} is not a device id, nor the start of one or the label of an online device; online: {}",
                if online.is_empty() {
                    "none".to_string()
                } else {
                    online.join(", ")
                }
            )
        }
        several => {
            let names: Vec<String> = several
                .iter()
                .map(|p| format!("{} ({})", p.id, p.label))
                .collect();
            bail!(
                "{name:?} names several online devices; give more of the id: {}",
                names.join(", ")
            )
        }
    }
}

fn load_identity(args: &IdentityArgs) -> Result<peerpipe::Identity> {
    identity::load_or_create(&identity_path(args))
}

/// `--identity`, or the default identity file.
fn identity_path(args: &IdentityArgs) -> std::path::PathBuf {
    args.identity.clone().unwrap_or_else(identity::default_path)
}

/// Which device key a command joins with.
#[derive(Clone, Copy)]
pub enum Role {
    /// The identity file's key, held for this process alone: the command is
    /// reached by its device id (named here for the error a second one gets).
    Holds(&'static str),
    /// A key for this run only, under the same user and label.
    ShortLived,
}

impl Role {
    /// The key to join with; fails if the identity is held by another command.
    pub fn identity(self, args: &NetArgs) -> Result<peerpipe::Identity> {
        match self {
            Role::Holds(command) => {
                identity::load_exclusive(&identity_path(&args.identity), command)
            }
            Role::ShortLived => Ok(identity::short_lived()),
        }
    }
}

/// Binds a node with the command line's server, token, identity and label.
async fn bind(args: &ClientArgs, role: Role) -> Result<Node> {
    let identity = role.identity(&args.net)?;
    bind_net(&args.net, Some(&args.token), identity).await
}

/// A node builder with the command line's server and label and the key
/// `identity`, and the server URL it joins; without a token the device joins
/// anonymously (it may only use one-time codes).
pub fn node_builder(
    args: &NetArgs,
    token: Option<&str>,
    identity: peerpipe::Identity,
) -> Result<(peerpipe::NodeBuilder, String)> {
    let label = args.label.clone().unwrap_or_else(host_name);
    let url = server_url(&args.server);
    let policy = if args.relay_only {
        PathPolicy::RelayOnly
    } else if args.direct_only {
        PathPolicy::DirectOnly
    } else {
        PathPolicy::Any
    };
    let mut builder = Node::builder().path_policy(policy).quic(!args.no_quic);
    if !args.stun.is_empty() || !args.turn.is_empty() {
        let servers = args.stun.iter().chain(&args.turn).cloned().collect();
        builder = builder.ice_servers(servers);
    }
    if let Some(token) = token {
        builder = builder.token(token);
    }
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("--ca-cert {}", path.display()))?;
        let certs = peerpipe::certificates_from_pem(&pem)
            .with_context(|| format!("--ca-cert {}", path.display()))?;
        builder = builder.trust_certificates(certs);
    }
    let builder = builder
        .server(url.clone())
        .identity(identity)
        .label(label)
        .connect_timeout(args.timeout)
        .request_timeout(args.timeout);
    Ok((builder, url))
}

/// Binds a node with `args`, `token` and `identity`; an error says which
/// server and, where it can, what to check.
pub async fn bind_net(
    args: &NetArgs,
    token: Option<&str>,
    identity: peerpipe::Identity,
) -> Result<Node> {
    let (builder, url) = node_builder(args, token, identity)?;
    builder.bind().await.map_err(|e| explain_bind(&url, e))
}

/// A bind error as the user reads it: the server's URL, the cause, and a hint
/// where one helps.
pub fn explain_bind(url: &str, e: peerpipe::BindError) -> anyhow::Error {
    let hint = match &e {
        peerpipe::BindError::Tls(_) => {
            Some("for a self-signed or private certificate, trust it with --ca-cert PEM_FILE")
        }
        peerpipe::BindError::Unreachable(io)
            if io.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            Some(
                "is `peerpipe serve` running there? (--server, PEERPIPE_SERVER or \
                 `peerpipe config set server` names another)",
            )
        }
        _ => None,
    };
    let e = anyhow::Error::new(e).context(format!("joining {url}"));
    match hint {
        Some(hint) => anyhow!("{e:#}\n  hint: {hint}"),
        None => e,
    }
}

/// Accepts `HOST:PORT`, a `ws://`/`wss://` URL, or the server's `http://`/
/// `https://` address (as a browser shows it); fills in the scheme and path.
pub(crate) fn server_url(s: &str) -> String {
    let with_scheme = match s.split_once("://") {
        Some(("http", rest)) => format!("ws://{rest}"),
        Some(("https", rest)) => format!("wss://{rest}"),
        Some(_) => s.to_string(),
        None => format!("ws://{s}"),
    };
    let after_scheme = with_scheme.split_once("://").map_or("", |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(at) if at + 1 < after_scheme.len() => with_scheme,
        Some(_) => format!("{with_scheme}v1/signal"),
        None => format!("{with_scheme}/v1/signal"),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| {
            s.trim()
                .chars()
                .take(peerpipe_proto::signal::MAX_LABEL_LEN)
                .collect()
        })
        .unwrap_or_default()
}

async fn log_events(node: Node) {
    while let Some(event) = node.next_event().await {
        log_event(&event);
    }
}

fn log_event(event: &NodeEvent) {
    match event {
        NodeEvent::Reconnecting {
            attempt,
            delay,
            error,
        } => {
            tracing::warn!("server link lost ({error}); reconnect attempt {attempt} in {delay:?}")
        }
        NodeEvent::Reconnected => tracing::info!("server link back"),
        NodeEvent::Slow { operation, elapsed } => {
            tracing::warn!("{operation}: no progress for {elapsed:.1?}")
        }
        NodeEvent::ConnectionClosed { peer, reason, .. } => {
            tracing::info!("connection with {} closed: {reason}", peer.short())
        }
        NodeEvent::PathChanged {
            peer, path, rtt, ..
        } => {
            tracing::info!("path to {}: {path} (rtt {rtt:.1?})", peer.short())
        }
        NodeEvent::Stopped { error } => {
            tracing::error!("server link stopped: {}", error_chain(error))
        }
        other => tracing::debug!("{other:?}"),
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Prints a transfer summary on stderr.
pub fn report(what: &str, bytes: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    tracing::info!(
        "{what} {bytes} bytes in {secs:.2} s ({:.1} MB/s)",
        bytes as f64 / secs / 1e6
    );
}

#[cfg(test)]
mod tests {
    use super::server_url;

    #[test]
    fn server_urls_are_completed() {
        assert_eq!(
            server_url("127.0.0.1:7878"),
            "ws://127.0.0.1:7878/v1/signal"
        );
        assert_eq!(server_url("ws://h:1"), "ws://h:1/v1/signal");
        assert_eq!(server_url("wss://h/custom"), "wss://h/custom");
        assert_eq!(server_url("http://h:1/"), "ws://h:1/v1/signal");
        assert_eq!(server_url("https://h"), "wss://h/v1/signal");
    }
}
