//! `peerpipe serve` and `peerpipe token`.

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
    config.listen = args.listen;
    if let Some(v) = args.max_frame {
        config.max_frame = usize::try_from(v).context("--max-frame is too large")?;
    }
    if let Some(v) = args.control_rate {
        config.control_rate = v;
    }
    if let Some(v) = args.relay_rate {
        config.relay_rate = v;
    }
    if let Some(v) = args.max_devices_per_user {
        config.max_devices_per_user = v;
    }
    if let Some(v) = args.handshake_timeout {
        config.handshake_timeout = v;
    }
    if let Some(v) = args.idle_timeout {
        config.idle_timeout = v;
        config.ping_interval = config.ping_interval.min(v / 3);
    }
    if let Some(v) = args.accept_timeout {
        config.accept_timeout = v;
    }
    if let Some(v) = args.slow_consumer_timeout {
        config.slow_consumer_timeout = v;
    }
    config.allow_anonymous = !args.no_anonymous;
    config.allow_codes = !args.no_codes;
    if let Some(v) = args.code_ttl {
        config.code_ttl = v;
    }
    if let Some(v) = args.code_rate_per_ip {
        config.code_rate_per_ip = v;
    }
    if let Some(v) = args.code_burst_per_ip {
        config.code_burst_per_ip = v;
    }
    config.ice_servers = args.stun.into_iter().chain(args.turn).collect();
    config.stun_listen = args.stun_listen;
    if config.ice_servers.len() > MAX_ICE_SERVERS {
        bail!("at most {MAX_ICE_SERVERS} --stun and --turn servers together");
    }
    let server = Server::bind(config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    say!(
        "peerpipe server listening on {} (health: http://{}/health, metrics: http://{}/metrics)",
        server.url(),
        server.local_addr(),
        server.local_addr()
    );
    peerpipe_server::serve_until_signal(server).await;
    say!("server stopped");
    Ok(())
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
