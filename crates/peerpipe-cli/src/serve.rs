//! `peerpipe serve` and `peerpipe token`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use peerpipe_proto::signal::MAX_ICE_SERVERS;
use peerpipe_server::{Config, Server, load_or_create_secret};

use crate::{ServeArgs, TokenArgs, identity};

/// The file a web page directory must hold.
const WEB_INDEX: &str = "index.html";

pub async fn run(args: ServeArgs) -> Result<()> {
    let page = web_page(&args)?;
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
    if let WebPage::Dir(dir) = &page {
        config.web_root = Some(dir.clone());
    }
    if config.ice_servers.len() > MAX_ICE_SERVERS {
        bail!("at most {MAX_ICE_SERVERS} --stun and --turn servers together");
    }
    config.redis = args.redis.clone();
    config.cluster_listen = args.cluster_listen;
    config.cluster_advertise = args.cluster_advertise;
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
    match page {
        WebPage::Dir(_) => say!(
            "web page: {}",
            page_line(args.public_url.as_deref(), server.local_addr(), config_tls)
        ),
        WebPage::NotFound => {
            say!("no web page (build it with scripts/web-page, or give --web-dir DIR)")
        }
        WebPage::Off => {}
    }
    peerpipe_server::serve_until_signal(server).await;
    say!("server stopped");
    Ok(())
}

/// Where the web page comes from.
#[derive(Debug, PartialEq)]
enum WebPage {
    /// Served from this directory.
    Dir(PathBuf),
    /// None given and none found where one is looked for.
    NotFound,
    /// Turned off with `--no-web`.
    Off,
}

/// `--web-dir` (which must hold index.html), else the first default that
/// does, unless `--no-web`.
fn web_page(args: &ServeArgs) -> Result<WebPage> {
    if args.no_web {
        return Ok(WebPage::Off);
    }
    if let Some(dir) = &args.web_dir {
        if !dir.join(WEB_INDEX).is_file() {
            bail!(
                "--web-dir {}: there is no {WEB_INDEX} in it; build the page with \
                 scripts/web-page (it writes target/web) and give that directory",
                dir.display()
            );
        }
        return Ok(WebPage::Dir(dir.clone()));
    }
    let exe = std::env::current_exe().ok();
    let found = exe
        .as_deref()
        .and_then(Path::parent)
        .map(default_web_dirs)
        .and_then(|dirs| dirs.into_iter().find(|d| d.join(WEB_INDEX).is_file()));
    Ok(found.map_or(WebPage::NotFound, WebPage::Dir))
}

/// Where the page is looked for beside the program in `exe_dir`: an
/// installed copy (`PREFIX/bin/peerpipe`, `PREFIX/share/peerpipe/web`), then
/// the build tree (`target/release/peerpipe`, `target/web`).
fn default_web_dirs(exe_dir: &Path) -> [PathBuf; 2] {
    [
        exe_dir.join("../share/peerpipe/web"),
        exe_dir.join("../web"),
    ]
}

/// Where to open the page: from `--public-url`, or the address the server is
/// bound to (for an unspecified one, the loopback address and a word on
/// other devices).
fn page_line(public_url: Option<&str>, bound: SocketAddr, tls: bool) -> String {
    if let Some(url) = public_url {
        return format!(
            "open {} in a browser",
            page_url(&crate::client::server_url(url))
        );
    }
    let scheme = if tls { "https" } else { "http" };
    let addrs = client_addrs(bound);
    let mut line = format!("open {scheme}://{}/ in a browser", addrs[0]);
    if bound.ip().is_unspecified() {
        line.push_str(" on this machine; other devices use this machine's address");
        let mut notes: Vec<String> = addrs
            .get(1)
            .map(|routed| format!("{scheme}://{routed}/"))
            .into_iter()
            .collect();
        if !tls {
            // Secure contexts: plain http is one only on the loopback address.
            notes.push("browsers there need https: --tls-cert/--tls-key".into());
        }
        if !notes.is_empty() {
            line.push_str(&format!(" ({})", notes.join("; ")));
        }
    }
    line
}

/// The page's URL on the server whose signaling URL is `signal`: http(s) for
/// ws(s), the path without its `v1/signal` (behind a proxy that maps a path
/// prefix), else the root.
fn page_url(signal: &str) -> String {
    let (scheme, rest) = match signal.split_once("://") {
        Some(("wss", rest)) => ("https", rest),
        Some((_, rest)) => ("http", rest),
        None => ("http", signal),
    };
    let (host, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    let prefix = path
        .strip_suffix("v1/signal")
        .filter(|p| p.ends_with('/'))
        .unwrap_or("/");
    format!("{scheme}://{host}{prefix}")
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

/// The URLs clients use for a server bound to `bound` (see [`client_addrs`]).
fn client_urls(bound: SocketAddr, tls: bool) -> Vec<String> {
    let scheme = if tls { "wss" } else { "ws" };
    client_addrs(bound)
        .into_iter()
        .map(|addr| format!("{scheme}://{addr}/v1/signal"))
        .collect()
}

/// The addresses clients reach a server bound to `bound` at: that address, or
/// for an unspecified one (0.0.0.0, ::) the loopback address and the address
/// of the interface the default route leaves by.
fn client_addrs(bound: SocketAddr) -> Vec<SocketAddr> {
    let at = |ip: IpAddr| SocketAddr::new(ip, bound.port());
    if !bound.ip().is_unspecified() {
        return vec![bound];
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
    let mut addrs = vec![at(loopback)];
    // Connecting a UDP socket sends nothing; it only asks the routing table
    // which local address would be used.
    let routed = std::net::UdpSocket::bind(SocketAddr::new(bound.ip(), 0))
        .and_then(|socket| socket.connect(probe).and_then(|()| socket.local_addr()));
    if let Ok(local) = routed
        && !local.ip().is_loopback()
        && !local.ip().is_unspecified()
    {
        addrs.push(at(local.ip()));
    }
    addrs
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

    #[test]
    fn the_page_line_names_a_url_to_open() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            page_line(None, at("127.0.0.1:7878"), false),
            "open http://127.0.0.1:7878/ in a browser"
        );
        assert_eq!(
            page_line(None, at("10.1.2.3:443"), true),
            "open https://10.1.2.3:443/ in a browser"
        );
        let all = page_line(None, at("0.0.0.0:7878"), true);
        assert!(
            all.starts_with(
                "open https://127.0.0.1:7878/ in a browser on this machine; \
                             other devices use this machine's address"
            ),
            "{all}"
        );
        assert!(!all.contains("0.0.0.0"), "{all}");
        let v6 = page_line(None, at("[::]:7878"), false);
        assert!(
            v6.starts_with("open http://[::1]:7878/ in a browser"),
            "{v6}"
        );
        assert!(v6.contains("--tls-cert"), "{v6}");
        assert_eq!(
            page_line(Some("wss://pipe.example.org"), at("0.0.0.0:443"), true),
            "open https://pipe.example.org/ in a browser"
        );
    }

    #[test]
    fn page_urls_follow_the_signaling_url() {
        assert_eq!(page_url("ws://h:1/v1/signal"), "http://h:1/");
        assert_eq!(page_url("wss://h/v1/signal"), "https://h/");
        assert_eq!(page_url("wss://h/pipe/v1/signal"), "https://h/pipe/");
        assert_eq!(page_url("wss://h/custom"), "https://h/");
        assert_eq!(page_url("wss://h/xv1/signal"), "https://h/");
    }

    #[test]
    fn the_page_is_looked_for_installed_then_in_the_build_tree() {
        let [installed, built] = default_web_dirs(Path::new("/opt/pp/bin"));
        assert_eq!(installed, Path::new("/opt/pp/bin/../share/peerpipe/web"));
        assert_eq!(built, Path::new("/opt/pp/bin/../web"));
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
