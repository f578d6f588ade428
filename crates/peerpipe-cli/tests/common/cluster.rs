//! A cluster of `peerpipe serve` nodes behind a real nginx, sharing a real
//! redis-server, all on 127.0.0.1 and started by the tests themselves, for the
//! opt-in cluster tests (`.ci/run` installs redis-server and nginx with apt).
//!
//! Every process is killed on drop and every wait is bounded, so a failing test
//! leaves nothing running. Logs go to files in the test's directory; a failure
//! to start panics with the tail of the log.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{KillOnDrop, bin, run_ok};

/// The redis-server binary (Debian: /usr/bin/redis-server), looked up on `PATH`.
pub const REDIS_SERVER: &str = "redis-server";

/// The nginx binary where Debian puts it (/usr/sbin is not on every user's `PATH`).
pub const NGINX: &str = "/usr/sbin/nginx";

/// `Ok` when redis-server and nginx can be run; else what is missing and how
/// to install it.
pub fn have_cluster_tools() -> Result<(), String> {
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = [(REDIS_SERVER, "--version"), (NGINX, "-v")]
        .into_iter()
        .filter(|(program, arg)| !runs(program, arg))
        .map(|(program, _)| program)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} not found: install them with `apt-get install redis-server nginx`",
            missing.join(" and ")
        ))
    }
}

/// A loopback port free right now: bound to port 0, read, closed. Another
/// process may take it before the caller binds it; the callers retry or fail
/// with the log.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// Mints a token for `user` with `peerpipe token --secret-file FILE --user USER`
/// (the file must exist: a node creates it when it starts).
pub fn token(secret_file: &Path, user: &str) -> String {
    run_ok(
        bin()
            .args(["token", "--user", user, "--secret-file"])
            .arg(secret_file),
    )
    .trim()
    .to_string()
}

/// `peerpipe CMD [ARGS] --server URL --token TOKEN --identity FILE`, like
/// [`super::client`] for any URL (a node's or the proxy's).
pub fn client_at(cmd: &str, args: &[&str], url: &str, token: &str, identity: &Path) -> Command {
    let mut command = bin();
    command
        .arg(cmd)
        .args(args)
        .args(["--server", url, "--token", token, "--identity"])
        .arg(identity);
    command
}

/// Polls `peerpipe peers` at `url` as `identity` until `peer` is listed
/// (bounded: 10 s).
pub fn wait_online_at(url: &str, token: &str, identity: &Path, peer: &str) {
    for _ in 0..100 {
        let stdout = run_ok(&mut client_at("peers", &[], url, token, identity));
        if stdout.lines().any(|l| l.split('\t').next() == Some(peer)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{peer} never came online at {url}");
}

/// The value of an unlabelled metric `name` in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

/// `GET PATH` over raw HTTP/1.1 (`Connection: close`) to 127.0.0.1:`port`,
/// each step bounded by `bound`; the status code and the body (de-chunked).
pub fn http_get(port: u16, path: &str, bound: Duration) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, bound)?;
    stream.set_read_timeout(Some(bound))?;
    stream.set_write_timeout(Some(bound))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, text.to_string());
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(bad)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a `Transfer-Encoding: chunked` response; `None` if cut short.
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A log file opened for appending (a restarted process writes after its
/// earlier life), for a child's stdout and stderr.
fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Kills and reaps a child (`Child::kill` is SIGKILL on Unix); no-op for `None`.
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A `redis-server` on a loopback port with no persistence, killed on drop.
pub struct RedisProcess {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisProcess {
    /// Starts redis-server on a free loopback port, working directory `dir`
    /// (its log: `redis-PORT.log` there), and waits (bounded: 10 s) until it
    /// answers `PING`.
    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let child = Self::spawn(dir, port).unwrap_or_else(|e| panic!("{e}"));
        Self {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The log file (appended to over restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("redis-{}.log", self.port))
    }

    /// Kills it with SIGKILL and reaps it, as in a crash; no-op if not running.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Kills it, then starts it again on the same port, retrying while the port
    /// is still taken (bounded: 5 s). Its data is gone, as after a crash with
    /// no persistence.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Self::spawn(&self.dir, self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("restarting: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Spawns redis-server on `port` and waits (bounded: 10 s) for `+PONG`;
    /// `Err` with the log's tail if it exits or never answers.
    fn spawn(dir: &Path, port: u16) -> Result<Child, String> {
        let log = dir.join(format!("redis-{port}.log"));
        let out = log_file(&log);
        let mut child = Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("spawn {REDIS_SERVER}: {e} (apt-get install redis-server)"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!(
                    "redis-server on port {port} exited ({status}):\n{}",
                    tail(&log, 20)
                ));
            }
            if ping(port) {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {port} did not answer PING within 10 s:\n{}",
                    tail(&log, 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a redis on 127.0.0.1:`port` answers an inline `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let bound = Duration::from_millis(500);
    let Ok(mut stream) =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), bound)
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(bound));
    let mut answer = [0u8; 5];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG"
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `peerpipe serve` node of a cluster on a loopback port chosen before it
/// starts (so that it can come back on the same port), killed on drop.
pub struct NodeProcess {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    secret_file: PathBuf,
    redis: Option<String>,
    extra: Vec<String>,
}

impl NodeProcess {
    /// Starts `peerpipe serve --listen 127.0.0.1:PORT --secret-file FILE
    /// --max-connections-per-ip 100000 [--redis URL --cluster-listen
    /// 127.0.0.1:0] EXTRA` on a free port and waits (bounded: 20 s) until
    /// `GET /health` answers 200. Its stderr goes to `node-PORT.log` in `dir`.
    /// The logging is `PEERPIPE_LOG`, else `RUST_LOG`, else the binary's own
    /// default (info for peerpipe's crates).
    pub fn start(dir: &Path, secret_file: &Path, redis: Option<&str>, extra: &[&str]) -> Self {
        let port = free_port();
        let mut node = Self {
            child: None,
            port,
            log: dir.join(format!("node-{port}.log")),
            secret_file: secret_file.to_path_buf(),
            redis: redis.map(str::to_string),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.child = Some(node.spawn().unwrap_or_else(|e| panic!("{e}")));
        node
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its signaling URL, `ws://127.0.0.1:PORT/v1/signal`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/signal", self.port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The body of `GET /metrics` (bounded: 5 s); panics if it does not answer 200.
    pub fn metrics(&self) -> String {
        match http_get(self.port, "/metrics", Duration::from_secs(5)) {
            Ok((200, body)) => body,
            other => panic!("GET /metrics on node {}: {other:?}", self.port),
        }
    }

    /// Kills it with SIGKILL and reaps it, as in a crash; no-op if not running.
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// Kills it if it runs, then starts it again on the same port with the same
    /// flags, retrying while the port is still taken (bounded: 5 s, then 20 s
    /// for `/health`).
    pub fn restart(&mut self) {
        self.kill9();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.spawn() {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("restarting: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// All it logged so far (over restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Spawns the node and waits for `/health`; `Err` with the log's tail if
    /// it exits first or does not answer within 20 s.
    fn spawn(&self) -> Result<Child, String> {
        let mut command = bin();
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--secret-file")
            .arg(&self.secret_file)
            .args(["--max-connections-per-ip", "100000"]);
        if let Some(redis) = &self.redis {
            command.args(["--redis", redis, "--cluster-listen", "127.0.0.1:0"]);
        }
        command.args(&self.extra);
        if std::env::var_os("PEERPIPE_LOG").is_none()
            && let Some(filter) = std::env::var_os("RUST_LOG")
        {
            command.env("PEERPIPE_LOG", filter);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.log))
            .spawn()
            .expect("spawn peerpipe serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!(
                    "node on port {} exited ({status}):\n{}",
                    self.port,
                    tail(&self.log, 30)
                ));
            }
            if matches!(
                http_get(self.port, "/health", Duration::from_secs(1)),
                Ok((200, _))
            ) {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "node on port {} did not answer /health within 20 s:\n{}",
                    self.port,
                    tail(&self.log, 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A real nginx in front of the nodes: one round-robin `upstream` of their
/// ports, WebSocket upgrades passed through, stopped on drop with no worker
/// left behind.
pub struct Nginx {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Writes `nginx.conf` into `dir` (every temporary path, the pid file and
    /// `error.log` there too), runs nginx in the foreground with `dir` as its
    /// prefix, listening on a free loopback port, and waits (bounded: 10 s)
    /// until `GET /health` through it answers 200.
    pub fn start(dir: &Path, upstream_ports: &[u16]) -> Self {
        assert!(!upstream_ports.is_empty(), "nginx needs an upstream");
        let port = free_port();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir, port, upstream_ports)).unwrap();
        let out = log_file(&dir.join("nginx.out"));
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-g")
            .arg(format!(
                "daemon off; pid {};",
                dir.join("nginx.pid").display()
            ))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {NGINX}: {e} (apt-get install nginx)"));
        let mut nginx = Self {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        };
        nginx.wait_ready();
        nginx
    }

    /// Waits (bounded: 10 s) until `GET /health` through nginx answers 200;
    /// panics with its logs if it exits or does not.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                panic!("nginx exited ({status}):\n{}", self.logs());
            }
            if matches!(
                http_get(self.port, "/health", Duration::from_secs(1)),
                Ok((200, _))
            ) {
                return;
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "GET /health through nginx did not answer 200 within 10 s:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The signaling URL through it, `ws://127.0.0.1:PORT/v1/signal`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/signal", self.port)
    }

    /// The tails of its error log and of its stdout/stderr.
    pub fn logs(&self) -> String {
        format!(
            "error.log:\n{}\nstdout/stderr:\n{}",
            tail(&self.dir.join("error.log"), 30),
            tail(&self.dir.join("nginx.out"), 10)
        )
    }

    /// Stops it: SIGTERM to the master (a fast shutdown: a graceful SIGQUIT
    /// would wait for every open WebSocket), reaped within 5 s; else SIGKILL
    /// to the master and to its workers (listed before, as they are orphaned
    /// after). No-op if not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        signal("TERM", pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            // The master exits only once its workers have.
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let workers = children_of(pid);
        let _ = child.kill();
        let _ = child.wait();
        for worker in workers {
            signal("KILL", worker);
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The nginx.conf of [`Nginx::start`].
fn nginx_conf(dir: &Path, port: u16, upstream_ports: &[u16]) -> String {
    let d = dir.display();
    let servers: String = upstream_ports
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n"))
        .collect();
    // As root the workers would switch to `nobody`; keep them as the test's user.
    let user = if running_as_root() {
        "user root;\n"
    } else {
        ""
    };
    format!(
        r#"{user}worker_processes 1;
error_log "{d}/error.log" info;
lock_file "{d}/nginx.lock";

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path "{d}/client_body_temp";
    proxy_temp_path "{d}/proxy_temp";
    fastcgi_temp_path "{d}/fastcgi_temp";
    uwsgi_temp_path "{d}/uwsgi_temp";
    scgi_temp_path "{d}/scgi_temp";

    upstream peerpipe {{
{servers}    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://peerpipe;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"#
    )
}

/// Whether the test runs as root (`Uid:` in /proc/self/status).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            Some(line.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false)
}

/// Sends SIG`name` to `pid` with the `kill` command.
fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The processes whose parent is `pid` (from /proc/*/stat).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let child: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            // `PID (COMM) STATE PPID ...`; COMM may hold spaces and parentheses.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// A redis-server, `n` nodes sharing it (and one token secret), and nginx in
/// front of them all.
pub struct Cluster {
    pub redis: RedisProcess,
    pub nodes: Vec<NodeProcess>,
    pub nginx: Nginx,
    pub secret_file: PathBuf,
}

impl Cluster {
    /// Starts it all in `dir`; panics with what is missing when redis-server
    /// or nginx is not installed.
    pub fn start(dir: &Path, n: usize) -> Self {
        Self::start_with(dir, n, &[])
    }

    /// Like [`Cluster::start`], with extra `peerpipe serve` flags for every node.
    pub fn start_with(dir: &Path, n: usize, extra: &[&str]) -> Self {
        if let Err(e) = have_cluster_tools() {
            panic!("{e}");
        }
        let redis = RedisProcess::start(dir);
        let secret_file = dir.join("secret");
        // The first node creates the secret; the others read it.
        let nodes: Vec<NodeProcess> = (0..n)
            .map(|_| NodeProcess::start(dir, &secret_file, Some(&redis.url()), extra))
            .collect();
        let ports: Vec<u16> = nodes.iter().map(NodeProcess::port).collect();
        let nginx = Nginx::start(dir, &ports);
        Self {
            redis,
            nodes,
            nginx,
            secret_file,
        }
    }

    /// The device `identity` online on node `node` (a `listen --relay-only`
    /// that waits for a connection), until dropped.
    pub fn online(&self, node: usize, token: &str, identity: &Path) -> KillOnDrop {
        KillOnDrop(
            client_at(
                "listen",
                &["--relay-only"],
                &self.nodes[node].url(),
                token,
                identity,
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn peerpipe listen"),
        )
    }

    /// How many connections of other nodes node `node` stands in for.
    pub fn stand_ins(&self, node: usize) -> Option<u64> {
        metric(
            &self.nodes[node].metrics(),
            "peerpipe_cluster_remote_connections",
        )
    }

    /// A token for `user`.
    pub fn token(&self, user: &str) -> String {
        token(&self.secret_file, user)
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("\n--- node {} ---\n{}", n.port(), n.log()))
            .collect()
    }
}
