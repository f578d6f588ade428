//! `peerpipe serve` and `peerpipe token`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use peerpipe_proto::signal::MAX_ICE_SERVERS;
use peerpipe_server::{Config, Server, load_or_create_secret};

use crate::{ServeArgs, TokenArgs, identity};

pub async fn run(args: ServeArgs) -> Result<()> {
    let secret_file = args
        .secret_file
        .unwrap_or_else(|| identity::config_dir().join("server-secret"));
    let (secret, created) = load_or_create_secret(&secret_file)
        .with_context(|| format!("secret file {}", secret_file.display()))?;
    if created {
        say!("created a new token secret: {}", secret_file.display());
    }
    say!(
        "mint tokens with: peerpipe token --secret-file {} --user NAME",
        secret_file.display()
    );
    let mut config = Config::new(secret);
    config.listen = resolve_listen(&args.listen)?;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls =
            Some(peerpipe_server::tls_from_pem_files(cert, key).context("--tls-cert/--tls-key")?);
    }
    config.max_frame = usize::try_from(args.max_frame).context("--max-frame is too large")?;
    config.control_rate = args.control_rate;
    config.relay_rate = args.relay_rate;
    config.max_devices_per_user = args.max_devices_per_user;
    config.handshake_timeout = args.handshake_timeout;
    config.max_connections = args.max_connections;
    config.max_connections_per_ip = args.max_connections_per_ip;
    config.idle_timeout = args.idle_timeout;
    config.ping_interval = config.ping_interval.min(args.idle_timeout / 3);
    config.accept_timeout = args.accept_timeout;
    config.slow_consumer_timeout = args.slow_consumer_timeout;
    config.relay_session_queue =
        usize::try_from(args.relay_session_queue).context("--relay-session-queue is too large")?;
    config.relay_connection_queue = usize::try_from(args.relay_connection_queue)
        .context("--relay-connection-queue is too large")?;
    config.allow_anonymous = !args.no_anonymous;
    config.allow_codes = !args.no_codes;
    config.code_ttl = args.code_ttl;
    config.code_rate_per_ip = args.code_rate_per_ip;
    config.code_burst_per_ip = args.code_burst_per_ip;
    config.ice_servers = args.stun.into_iter().chain(args.turn).collect();
    config.stun_listen = args.stun_listen;
    if config.ice_servers.len() > MAX_ICE_SERVERS {
        bail!("at most {MAX_ICE_SERVERS} --stun and --turn servers together");
    }
    let config_tls = config.tls.is_some();
    let server = Server::bind(config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let web = if config_tls { "https" } else { "http" };
    say!(
        "peerpipe server listening on {} (health: {web}://{}/health, metrics: {web}://{}/metrics)",
        server.url(),
        server.local_addr(),
        server.local_addr()
    );
    let urls = match &args.public_url {
        Some(url) => vec![crate::client::server_url(url)],
        None => client_urls(server.local_addr(), config_tls),
    };
    for url in &urls {
        say!("clients connect with: --server {url}");
    }
    peerpipe_server::serve_until_signal(server).await;
    say!("server stopped");
    Ok(())
}

/// `--listen`: IP:PORT, or HOST:PORT resolved (the first address it names).
fn resolve_listen(listen: &str) -> Result<SocketAddr> {
    let mut addrs = listen
        .to_socket_addrs()
        .with_context(|| format!("--listen {listen:?} is not IP:PORT or HOST:PORT"))?;
    addrs
        .next()
        .with_context(|| format!("--listen {listen:?} names no address"))
}

/// The URLs clients use for a server bound to `bound`: that address, or for an
/// unspecified one (0.0.0.0, ::) the loopback address and the address of the
/// interface the default route leaves by.
fn client_urls(bound: SocketAddr, tls: bool) -> Vec<String> {
    let scheme = if tls { "wss" } else { "ws" };
    let url = |ip: IpAddr| format!("{scheme}://{}/v1/signal", SocketAddr::new(ip, bound.port()));
    if !bound.ip().is_unspecified() {
        return vec![url(bound.ip())];
    }
    let (loopback, probe): (IpAddr, SocketAddr) = match bound {
        SocketAddr::V4(_) => (
            Ipv4Addr::LOCALHOST.into(),
            "192.0.2.1:9".parse().expect("an address"),
        ),
        SocketAddr::V6(_) => (
            Ipv6Addr::LOCALHOST.into(),
            "[2001:db8::1]:9".parse().expect("an address"),
        ),
    };
    let mut urls = vec![url(loopback)];
    // Connecting a UDP socket sends nothing; it only asks the routing table
    // which local address would be used.
    let routed = std::net::UdpSocket::bind(SocketAddr::new(bound.ip(), 0))
        .and_then(|socket| socket.connect(probe).and_then(|()| socket.local_addr()));
    if let Ok(local) = routed
        && !local.ip().is_loopback()
        && !local.ip().is_unspecified()
    {
        urls.push(url(local.ip()));
    }
    urls
}

pub fn token(args: TokenArgs) -> Result<()> {
    let (secret, _) = read_secret(&args)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs();
    let token =
        peerpipe_proto::token::mint(&secret, &args.user, now.saturating_add(args.ttl.as_secs()))
            .context("cannot mint a token")?;
    println!("{token}");
    Ok(())
}

fn read_secret(args: &TokenArgs) -> Result<(Vec<u8>, bool)> {
    if !args.secret_file.exists() {
        anyhow::bail!(
            "secret file {} does not exist: start `peerpipe serve --secret-file {}` once to create it",
            args.secret_file.display(),
            args.secret_file.display()
        );
    }
    load_or_create_secret(&args.secret_file)
        .with_context(|| format!("secret file {}", args.secret_file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_host_names_and_refuses_garbage() {
        assert!(resolve_listen("localhost:7881").unwrap().ip().is_loopback());
        assert_eq!(
            resolve_listen("127.0.0.1:7").unwrap(),
            "127.0.0.1:7".parse().unwrap()
        );
        assert!(resolve_listen("no port").is_err());
    }

    #[test]
    fn client_urls_never_name_the_unspecified_address() {
        let urls = client_urls("0.0.0.0:7880".parse().unwrap(), false);
        assert_eq!(urls[0], "ws://127.0.0.1:7880/v1/signal");
        assert!(urls.iter().all(|u| !u.contains("0.0.0.0")), "{urls:?}");
        assert_eq!(
            client_urls("10.1.2.3:443".parse().unwrap(), true),
            ["wss://10.1.2.3:443/v1/signal"]
        );
    }
}

#[cfg(test)]
mod defaults {
    use clap::Parser as _;

    /// What `serve --help` shows as defaults is what the server uses.
    #[test]
    fn serve_defaults_are_the_servers() {
        let crate::Cli { command, .. } = crate::Cli::parse_from(["peerpipe", "serve"]);
        let crate::Command::Serve(args) = command else {
            panic!("not serve")
        };
        let server = peerpipe_server::Config::new(vec![0; 32]);
        assert_eq!(args.max_frame, server.max_frame as u64);
        assert_eq!(args.control_rate, server.control_rate);
        assert_eq!(args.relay_rate, server.relay_rate);
        assert_eq!(args.max_devices_per_user, server.max_devices_per_user);
        assert_eq!(args.handshake_timeout, server.handshake_timeout);
        assert_eq!(args.max_connections, server.max_connections);
        assert_eq!(args.max_connections_per_ip, server.max_connections_per_ip);
        assert_eq!(args.idle_timeout, server.idle_timeout);
        assert_eq!(args.accept_timeout, server.accept_timeout);
        assert_eq!(args.slow_consumer_timeout, server.slow_consumer_timeout);
        assert_eq!(args.relay_session_queue, server.relay_session_queue as u64);
        assert_eq!(
            args.relay_connection_queue,
            server.relay_connection_queue as u64
        );
        assert_eq!(args.code_ttl, server.code_ttl);
        assert_eq!(args.code_rate_per_ip, server.code_rate_per_ip);
        assert_eq!(args.code_burst_per_ip, server.code_burst_per_ip);
        assert_eq!(args.idle_timeout / 3, server.ping_interval);
    }
}
