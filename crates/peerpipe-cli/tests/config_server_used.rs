//! The config file's server and token are what `peerpipe peers` and `send`
//! use against a real server on 127.0.0.1 when no flag or environment
//! variable names them; a flag, and the environment variable, win over it.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{ServeProcess, TempDir, wait_bounded};

fn with_config(file: &Path, args: &[&str]) -> Output {
    common::bin()
        .args(args)
        .env("PEERPIPE_CONFIG", file)
        .env_remove("PEERPIPE_SERVER")
        .env_remove("PEERPIPE_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn config_server_and_token_are_used_and_flags_win() {
    let dir = TempDir::new("config-server-used");
    let server = ServeProcess::start(&dir.0);
    let token = server.token("alice");
    let file = dir.path("config.toml");
    for (key, value) in [("server", server.addr()), ("token", token.as_str())] {
        let out = with_config(&file, &["config", "set", key, value]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let identity = dir.path("a");
    let identity = identity.to_str().unwrap();

    // Neither --server nor --token: both from the file.
    let peers = with_config(
        &file,
        &["peers", "--identity", identity, "--timeout", "10s"],
    );
    assert!(
        peers.status.success(),
        "peers with the config's server and token: {}",
        String::from_utf8_lossy(&peers.stderr)
    );

    // A flag wins over the file: a port nothing listens on.
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().to_string()
    };
    let flagged = with_config(
        &file,
        &[
            "peers",
            "--identity",
            identity,
            "--server",
            &closed,
            "--timeout",
            "5s",
        ],
    );
    assert!(!flagged.status.success(), "--server overrides the config");
    let stderr = String::from_utf8_lossy(&flagged.stderr);
    assert!(
        stderr.contains(&closed),
        "the flag's server was tried: {stderr}"
    );

    // So does the environment variable.
    let env = common::bin()
        .args(["peers", "--identity", identity, "--timeout", "5s"])
        .env("PEERPIPE_CONFIG", &file)
        .env("PEERPIPE_SERVER", &closed)
        .env_remove("PEERPIPE_TOKEN")
        .output()
        .unwrap();
    assert!(
        !env.status.success(),
        "PEERPIPE_SERVER overrides the config"
    );
    assert!(String::from_utf8_lossy(&env.stderr).contains(&closed));

    // A token flag wins too: a bad one is refused by the server.
    let bad_token = with_config(
        &file,
        &[
            "peers",
            "--identity",
            identity,
            "--token",
            "not-a-token",
            "--timeout",
            "5s",
        ],
    );
    assert!(!bad_token.status.success(), "--token overrides the config");

    // send uses the config's server as well; its receive hint names it, since
    // the receiver may not have this config.
    let mut sender = common::Sender::spawn({
        let mut command = common::bin();
        command
            .args([
                "send",
                "--text",
                "hello from the config",
                "--identity",
                identity,
            ])
            .env("PEERPIPE_CONFIG", &file)
            .env_remove("PEERPIPE_SERVER")
            .env_remove("PEERPIPE_TOKEN");
        command
    });
    let received = common::bin()
        .args(["receive", &sender.code, "--server", &server.url])
        .arg("--identity")
        .arg(dir.path("b"))
        .env_remove("PEERPIPE_TOKEN")
        .output()
        .unwrap();
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&received.stdout),
        "hello from the config\n"
    );
    let status = wait_bounded(&mut sender.child, Duration::from_secs(30));
    assert!(status.success(), "send with the config's server");
    let stderr = common::stderr_of(&mut sender.child);
    assert!(
        stderr.contains(&format!("--server ws://{}", server.addr())),
        "the receive hint names the config's server: {stderr}"
    );
}
