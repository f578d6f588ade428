//! Helpers for the CLI tests: run the real `peerpipe` binary against a real server.
#![allow(dead_code)] // each test file uses a part of these helpers

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The built `peerpipe` binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peerpipe"))
}

/// `peerpipe CMD [ARGS] --server URL --token TOKEN --identity FILE`.
pub fn client(
    cmd: &str,
    args: &[&str],
    server: &ServeProcess,
    token: &str,
    identity: &Path,
) -> Command {
    let mut command = bin();
    command
        .arg(cmd)
        .args(args)
        .args(["--server", &server.url, "--token", token, "--identity"])
        .arg(identity);
    command
}

/// Runs `command`, asserts it succeeded and returns its stdout.
pub fn run_ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("peerpipe-cli-{tag}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `peerpipe serve` child on a free loopback port, killed on drop.
pub struct ServeProcess {
    pub child: Child,
    pub url: String,
    pub secret_file: PathBuf,
}

impl ServeProcess {
    pub fn start(dir: &Path) -> Self {
        let secret_file = dir.join("secret");
        let mut child = bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--secret-file"])
            .arg(&secret_file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peerpipe serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(url);
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server did not report its address");
        Self {
            child,
            url,
            secret_file,
        }
    }

    /// Mints a token for `user` with `peerpipe token`.
    pub fn token(&self, user: &str) -> String {
        run_ok(
            bin()
                .args(["token", "--user", user, "--secret-file"])
                .arg(&self.secret_file),
        )
        .trim()
        .to_string()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `peerpipe id` for an identity file and returns the id.
pub fn device_id(identity: &Path) -> String {
    run_ok(bin().arg("id").arg("--identity").arg(identity))
        .trim()
        .to_string()
}

/// Waits for a child with a bound; kills it and panics when the bound passes.
pub fn wait_bounded(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not finish within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `peerpipe peers` as `identity` until `peer` is listed (bounded: 10 s).
pub fn wait_online(server: &ServeProcess, token: &str, identity: &Path, peer: &str) {
    for _ in 0..100 {
        let stdout = run_ok(&mut client("peers", &[], server, token, identity));
        if stdout.lines().any(|l| l.split('\t').next() == Some(peer)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{peer} never came online");
}

/// Starts `peerpipe listen -q` as the device `identity`, its stdout piped.
pub fn spawn_listen(server: &ServeProcess, token: &str, identity: &Path) -> Child {
    client("listen", &["-q"], server, token, identity)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts `peerpipe connect -q PEER` as the device `identity`, its stdin piped.
pub fn spawn_connect(server: &ServeProcess, token: &str, identity: &Path, peer: &str) -> Child {
    client("connect", &["-q", peer], server, token, identity)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap()
}
