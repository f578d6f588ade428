//! Transfers over emulated WAN links, for the WAN tests and the WAN benchmark.
//!
//! A [`Wan`] is a [`Lab`] of three hosts — `a` (the sender), `b` (the
//! receiver) and `s` (the server) — every pair joined by the same emulated
//! link, with `peerpipe serve` running on `s`. A direct path between `a` and
//! `b` crosses one link; the relay crosses two (`a` → `s` → `b`). Each run
//! returns its wall time from the sender's start until the receiver has exited
//! with all bytes on disk, after comparing them with the input.
//!
//! Only for a process inside the namespaces of [`peerpipe_netem::enter`].
#![allow(dead_code)] // the tests and the benchmark each use a part

#[path = "files.rs"]
pub mod files;

use files::{output_of, same_files};

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use peerpipe_netem::{Lab, LinkConfig};

/// The port `peerpipe serve` listens on, on host `s`.
const SERVER_PORT: u16 = 7878;
/// How long the server, a listener or a code may take to appear.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A child that is killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one transfer measured.
#[derive(Debug)]
pub struct Run {
    /// From the sender's start until the receiver exited.
    pub took: Duration,
    /// The paths the sender logged, in order ("relay → quic").
    pub paths: String,
    /// The sender's stderr.
    pub sender_log: String,
    /// The receiver's stderr.
    pub receiver_log: String,
}

/// Three hosts on emulated links and a `peerpipe serve` on `s`.
pub struct Wan {
    /// The hosts and their links.
    pub lab: Lab,
    dir: PathBuf,
    url: String,
    token: String,
    _server: Guard,
    /// No transfer may take longer.
    pub limit: Duration,
}

fn peerpipe_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_peerpipe"))
}

/// Collects a pipe's text in a thread.
fn collect(pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(pipe).read_to_string(&mut text);
        text
    })
}

/// Waits up to `limit` for `child` to exit successfully.
fn wait(child: &mut Child, limit: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "{what} failed: {status}");
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{what} unfinished after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The distinct paths in a sender's `-v` log, in order.
fn paths_in(log: &str) -> String {
    let mut paths: Vec<&str> = Vec::new();
    for line in log.lines() {
        let path = line
            .split("sending on the ")
            .nth(1)
            .and_then(|rest| rest.split(" path").next())
            .or_else(|| {
                line.split("path to ")
                    .nth(1)
                    .and_then(|rest| rest.split(':').nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
            });
        if let Some(path) = path.filter(|p| paths.last() != Some(p)) {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        "relay".into()
    } else {
        paths.join(" → ")
    }
}

/// The last lines of a log, for an error.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Wan {
    /// Builds the hosts on `link` (seeded with `seed`), with scratch space in
    /// `dir`, and starts the server on `s`.
    pub fn start(link: &LinkConfig, seed: u64, dir: &Path) -> Result<Self> {
        let lab = Lab::start(&["a", "b", "s"], link, seed).context("building the lab")?;
        std::fs::create_dir_all(dir)?;
        let secret = dir.join("secret");
        let listen = format!("{}:{SERVER_PORT}", lab.addr("s"));
        let mut server = lab.command("s", peerpipe_exe());
        server
            .args(["serve", "--listen", &listen, "--secret-file"])
            .arg(&secret)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = Guard(server.spawn().context("starting peerpipe serve")?);
        let deadline = Instant::now() + START_LIMIT;
        while !secret.exists() {
            ensure!(Instant::now() < deadline, "peerpipe serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let token = output_of(
            Command::new(peerpipe_exe())
                .args(["token", "--user", "wan", "--secret-file"])
                .arg(&secret),
        )?;
        Ok(Self {
            lab,
            dir: dir.to_owned(),
            url: format!("ws://{listen}"),
            token,
            _server: server,
            limit: Duration::from_secs(120),
        })
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `peerpipe CMD` on `host` against the lab's server as device `device`.
    fn peerpipe(&self, host: &str, cmd: &str, device: &str) -> Command {
        let mut c = self.lab.command(host, peerpipe_exe());
        c.arg(cmd)
            .args(["--server", &self.url, "--identity"])
            .arg(self.dir.join(format!("{device}.key")));
        c
    }

    /// `nc -l` on `b`, `nc -N` from `a`: `input` into `output`.
    pub fn nc(&self, input: &Path, output: &Path) -> Result<Duration> {
        let port: u16 = 9000;
        let b = self.lab.addr("b").to_string();
        let mut receiver = Guard(
            self.lab
                .command("b", "nc")
                .args(["-l", &b, &port.to_string()])
                .stdout(File::create(output)?)
                .spawn()
                .context("running nc (apt-get install netcat-openbsd)")?,
        );
        // Until it listens: a probe connection would be taken for the transfer.
        let listening = format!(":{port:04X} 00000000:0000 0A");
        let deadline = Instant::now() + START_LIMIT;
        while !output_of(self.lab.command("b", "cat").arg("/proc/net/tcp"))?.contains(&listening) {
            if let Some(status) = receiver.0.try_wait()? {
                bail!("nc -l exited before it listened: {status}");
            }
            ensure!(Instant::now() < deadline, "nc -l did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        let mut sender = Guard(
            self.lab
                .command("a", "nc")
                .args(["-N", &b, &port.to_string()])
                .stdin(File::open(input)?)
                .spawn()?,
        );
        wait(&mut receiver.0, self.limit, "nc -l")?;
        let took = started.elapsed();
        wait(&mut sender.0, self.limit, "nc -N")?;
        ensure!(same_files(input, output)?, "nc: the received file differs");
        Ok(took)
    }

    /// `peerpipe listen > output` on `b`, `peerpipe connect -v < input` from
    /// `a`, both with `flags`.
    pub fn stream(&self, input: &Path, output: &Path, flags: &[&str]) -> Result<Run> {
        let listener = output_of(
            Command::new(peerpipe_exe())
                .arg("id")
                .arg("--identity")
                .arg(self.dir.join("b.key")),
        )?;
        let mut listen = self.peerpipe("b", "listen", "b");
        listen
            .args(["-v", "--token", &self.token])
            .args(flags)
            .stdout(File::create(output)?)
            .stderr(Stdio::piped());
        let mut listen = Guard(listen.spawn()?);
        let listen_log = collect(listen.0.stderr.take().context("no stderr")?);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let peers = output_of(
                self.peerpipe("a", "peers", "a")
                    .args(["--token", &self.token]),
            )?;
            if peers
                .lines()
                .any(|l| l.split('\t').next() == Some(&listener))
            {
                break;
            }
            ensure!(Instant::now() < deadline, "the listener never came online");
            std::thread::sleep(Duration::from_millis(50));
        }
        let started = Instant::now();
        let mut connect = self.peerpipe("a", "connect", "a");
        connect
            .args(["-v", "--token", &self.token])
            .args(flags)
            .arg(&listener)
            .stdin(File::open(input)?)
            .stderr(Stdio::piped());
        let mut connect = Guard(connect.spawn()?);
        let connect_log = collect(connect.0.stderr.take().context("no stderr")?);
        let received = wait(&mut listen.0, self.limit, "peerpipe listen");
        let took = started.elapsed();
        let sent = wait(&mut connect.0, self.limit, "peerpipe connect");
        drop((listen, connect));
        let sender_log = connect_log.join().unwrap_or_default();
        let receiver_log = listen_log.join().unwrap_or_default();
        if let Err(e) = received.and(sent) {
            let got = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
            bail!(
                "{e:#} ({} of {} MiB received); the sender's log:\n{}\nthe receiver's log:\n{}",
                got >> 20,
                std::fs::metadata(input)?.len() >> 20,
                tail(&sender_log),
                tail(&receiver_log)
            );
        }
        ensure!(
            same_files(input, output)?,
            "stream: the received file differs"
        );
        Ok(Run {
            took,
            paths: paths_in(&sender_log),
            sender_log,
            receiver_log,
        })
    }

    /// `peerpipe send -v INPUTS` from `a`, `peerpipe receive CODE -o OUT` on
    /// `b`, both with `flags`. The received files are in `out`.
    pub fn send_receive(&self, inputs: &[&Path], out: &Path, flags: &[&str]) -> Result<Run> {
        std::fs::create_dir_all(out)?;
        let started = Instant::now();
        let mut send = self.peerpipe("a", "send", "a");
        send.arg("-v")
            .args(flags)
            .args(inputs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut send = Guard(send.spawn()?);
        let send_log = collect(send.0.stderr.take().context("no stderr")?);
        let stdout = send.0.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            lines.for_each(drop);
        });
        let code = match rx.recv_timeout(START_LIMIT) {
            Ok(Some(Ok(code))) => code.trim().to_owned(),
            _ => {
                drop(send);
                bail!(
                    "peerpipe send printed no code:\n{}",
                    tail(&send_log.join().unwrap_or_default())
                );
            }
        };
        let mut receive = self.peerpipe("b", "receive", "b");
        receive
            .arg(&code)
            .arg("-o")
            .arg(out)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut receive = Guard(receive.spawn()?);
        let receive_log = collect(receive.0.stderr.take().context("no stderr")?);
        let received = wait(&mut receive.0, self.limit, "peerpipe receive");
        let took = started.elapsed();
        // The sender exits once its receiver is done, or serves on: either is fine.
        let _ = wait(&mut send.0, Duration::from_secs(5), "peerpipe send");
        drop((send, receive));
        let sender_log = send_log.join().unwrap_or_default();
        let receiver_log = receive_log.join().unwrap_or_default();
        if let Err(e) = received {
            bail!("{e:#}; the receiver's log:\n{}", tail(&receiver_log));
        }
        for input in inputs {
            let name = input.file_name().context("an input without a name")?;
            ensure!(
                same_files(input, &out.join(name))?,
                "send/receive: {} differs",
                name.to_string_lossy()
            );
        }
        Ok(Run {
            took,
            paths: paths_in(&sender_log),
            sender_log,
            receiver_log,
        })
    }
}
