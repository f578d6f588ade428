//! Helpers for the CLI tests: run the real `peerpipe` binary against a real server.
#![allow(dead_code)] // each test file uses a part of these helpers

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod cluster;
pub mod failover;
pub mod files;
pub mod machines;
pub mod pattern;

/// The built `peerpipe` binary, with a config file that does not exist: the
/// tests never read the config of the user running them.
pub fn bin() -> Command {
    bin_at(Path::new(env!("CARGO_BIN_EXE_peerpipe")))
}

/// Like [`bin`], for a link to or copy of the binary at `exe` (to test what it
/// looks for beside itself).
pub fn bin_at(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    command.env("PEERPIPE_CONFIG", no_config());
    command
}

/// A config file path where none exists: the tests never read the config of
/// the user running them.
pub fn no_config() -> PathBuf {
    std::env::temp_dir().join("peerpipe-cli-tests-no-config/config.toml")
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

/// A `peerpipe serve` child on a loopback port, killed on drop.
pub struct ServeProcess {
    pub child: Child,
    pub url: String,
    pub secret_file: PathBuf,
}

impl ServeProcess {
    /// Starts a server on a free port with a fresh secret file in `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Like [`ServeProcess::start`], with extra `peerpipe serve` flags.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        Self::spawn("127.0.0.1:0", &dir.join("secret"), extra)
            .unwrap_or_else(|e| panic!("peerpipe serve did not start: {e}"))
    }

    /// Starts a server on exactly `addr` (`HOST:PORT`) with `secret_file`, as when
    /// a server comes back after a restart: tokens minted before stay valid. Retries
    /// while the port is still taken, for at most `bound`.
    pub fn start_on(addr: &str, secret_file: &Path, bound: Duration) -> Self {
        Self::start_on_with(addr, secret_file, bound, &[])
    }

    /// Like [`ServeProcess::start_on`], with extra `peerpipe serve` flags.
    pub fn start_on_with(addr: &str, secret_file: &Path, bound: Duration, extra: &[&str]) -> Self {
        let deadline = Instant::now() + bound;
        loop {
            match Self::spawn(addr, secret_file, extra) {
                Ok(server) => return server,
                Err(e) if Instant::now() > deadline => {
                    panic!("peerpipe serve did not start on {addr} within {bound:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Spawns `peerpipe serve` and waits (bounded: 20 s) until it says where it
    /// listens; `Err` with its stderr if it exits first.
    fn spawn(listen: &str, secret_file: &Path, extra: &[&str]) -> Result<Self, String> {
        let mut child = bin()
            .args(["serve", "--listen", listen, "--secret-file"])
            .arg(secret_file)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peerpipe serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut before = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(Ok(url));
                } else {
                    before.push_str(&line);
                    before.push('\n');
                }
            }
            // Read only if the address never came: the server exited first.
            let _ = tx.send(Err(before));
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(url)) => Ok(Self {
                child,
                url,
                secret_file: secret_file.to_path_buf(),
            }),
            Ok(Err(stderr)) => {
                let status = child.wait().unwrap();
                Err(format!("exited ({status}): {}", stderr.trim()))
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err("it did not report its address within 20 s".to_string())
            }
        }
    }

    /// The `HOST:PORT` the server listens on.
    pub fn addr(&self) -> &str {
        let rest = self.url.split_once("://").map_or(&*self.url, |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
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
pub fn wait_bounded(child: &mut Child, bound: Duration) -> ExitStatus {
    wait_timeout(child, bound).unwrap_or_else(|| panic!("child did not finish within {bound:?}"))
}

/// Waits for a child with a bound; kills it and returns `None` when the bound passes.
pub fn wait_timeout(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed and reaped on drop, so a failing test leaves
/// nothing running.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A line of `/proc/PID/status` in KiB (`VmRSS`: resident now, `VmHWM`: the peak
/// so far); 0 once the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of a process in KiB; 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// The highest resident memory of a process so far in KiB (the kernel's
/// high-water mark, which also sees peaks between two samples); 0 once it is gone.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM")
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

/// A running `peerpipe send` and the code it printed.
pub struct Sender {
    pub child: KillOnDrop,
    pub code: String,
    /// The rest of its stdout (the code is the only line it prints).
    pub rest: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

/// `peerpipe send PATHS` as an anonymous device (no token), stdout and stderr
/// piped; waits for its code line.
pub fn spawn_send(server: &ServeProcess, identity: &Path, paths: &[&Path]) -> Sender {
    spawn_send_with(server, identity, paths, &[])
}

/// Like [`spawn_send`], with extra `peerpipe send` flags.
pub fn spawn_send_with(
    server: &ServeProcess,
    identity: &Path,
    paths: &[&Path],
    extra: &[&str],
) -> Sender {
    let mut command = bin();
    command
        .arg("send")
        .args(paths)
        .args(["--server", &server.url, "--identity"])
        .arg(identity)
        .args(extra)
        .env_remove("PEERPIPE_TOKEN");
    Sender::spawn(command)
}

impl Sender {
    /// Starts a `peerpipe send` command line, stdout and stderr piped, and
    /// waits for its code line.
    pub fn spawn(mut command: Command) -> Self {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = KillOnDrop(command.spawn().unwrap());
        let mut rest = BufReader::new(child.stdout.take().unwrap()).lines();
        let code = rest.next().expect("peerpipe send printed a code").unwrap();
        Sender { child, code, rest }
    }
}

/// `peerpipe receive CODE -o OUT [EXTRA]` as an anonymous device; its output.
pub fn receive(
    server: &ServeProcess,
    identity: &Path,
    code: &str,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    receive_command(server, identity, code, out, extra)
        .output()
        .unwrap()
}

/// The command line of [`receive`], to spawn it with other stdio.
pub fn receive_command(
    server: &ServeProcess,
    identity: &Path,
    code: &str,
    out: &Path,
    extra: &[&str],
) -> Command {
    let mut command = bin();
    command
        .args(["receive", code, "--server", &server.url, "--identity"])
        .arg(identity)
        .arg("-o")
        .arg(out)
        .args(extra)
        .env_remove("PEERPIPE_TOKEN");
    command
}

/// All a finished (or killed) child wrote to its piped stderr.
pub fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
    }
    text
}

/// Whether two files have the same bytes, compared in 1 MiB pieces.
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read as _;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if fb.read_exact(&mut bb[..na]).is_err() || ba[..na] != bb[..na] {
            return false;
        }
    }
}

/// `command` run on a pseudo-terminal (util-linux `script`): its stdin, stdout
/// and stderr are the terminal, which the returned command's stdin and stdout
/// feed and show (stdout and stderr mixed). Exits with `command`'s status.
pub fn in_pty(command: &Command) -> Command {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    // `env` takes its -u options before any NAME=VALUE.
    let mut line = String::from("env");
    for (key, _) in command.get_envs().filter(|(_, v)| v.is_none()) {
        line.push_str(&format!(" -u {}", quote(key)));
    }
    for (key, value) in command.get_envs() {
        if let Some(v) = value {
            line.push_str(&format!(" {}={}", key.to_string_lossy(), quote(v)));
        }
    }
    line.push(' ');
    line.push_str(&quote(command.get_program()));
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    let mut script = Command::new("script");
    script.args(["--quiet", "--return", "--command", &line, "/dev/null"]);
    script
}

/// Runs `command` (from [`in_pty`]) with `input` typed on its terminal, for at
/// most `bound`; its status (`None`: killed at the bound) and all it showed.
pub fn run_in_pty(
    mut command: Command,
    input: &str,
    bound: Duration,
) -> (Option<ExitStatus>, String) {
    use std::io::Write as _;
    let mut child = KillOnDrop(
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn script (util-linux)"),
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    // stdin stays open until the end: `script` may end the session at its EOF.
    let status = wait_timeout(&mut child, bound);
    drop(stdin);
    (status, reader.join().unwrap_or_default())
}

/// Reads `receive --json` event lines from `stdout` until a `progress` event
/// reports at least `bytes` done (within 30 s), then keeps reading the rest
/// on a thread so that the receiver never blocks on a full pipe.
pub fn wait_json_progress(stdout: std::process::ChildStdout, bytes: u64) {
    use std::io::{BufRead as _, BufReader};
    let mut events = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no progress");
        let line = events
            .next()
            .expect("receive ended before progress")
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "progress" && event["done"].as_u64().unwrap_or(0) >= bytes {
            break;
        }
    }
    std::thread::spawn(move || events.for_each(drop));
}

/// Starts `command` (a `peerpipe share`, its stderr dropped) and returns it
/// with the ticket it printed.
pub fn spawn_share(mut command: Command) -> (KillOnDrop, String) {
    let mut child = KillOnDrop(
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ticket = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .expect("a ticket line")
        .unwrap();
    (child, ticket)
}
