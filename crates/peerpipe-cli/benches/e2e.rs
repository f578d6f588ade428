//! End-to-end benchmark: one file from disk to disk through `peerpipe connect`
//! → `peerpipe listen` (server, listener and sender as separate processes, the
//! path they choose: QUIC between two native devices), next to `nc` file to
//! file on loopback in the same run.
//!
//! `cargo bench -p peerpipe-cli --bench e2e` writes a file of
//! `PEERPIPE_BENCH_E2E_MIB` MiB (default 1024) of pseudo-random bytes, then:
//!
//! - `nc`: `nc -l 127.0.0.1 PORT > out` and `nc -N 127.0.0.1 PORT < in`;
//! - `peerpipe`: `peerpipe serve` on 127.0.0.1, `peerpipe listen > out` and
//!   `peerpipe connect -v ID < in` (its stderr names the path).
//!
//! Each is timed from the sender's start until the receiver has exited (all
//! bytes on disk), and the received file is compared with the sent one byte for
//! byte. MB/s is 10^6 bytes per second. Needs `nc` (OpenBSD netcat, for `-N`).

mod common;

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use common::files::{output_of, same_files, write_input};
use common::{SEED, free_port};

const MIB: u64 = 1024 * 1024;
/// No step may take longer than this.
const LIMIT: Duration = Duration::from_secs(600);

fn peerpipe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peerpipe"))
}

/// A child that is killed if the benchmark stops early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit within [`LIMIT`].
fn wait(child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "{what} failed: {status}");
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{what} did not finish in {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_nc(input: &Path, output: &Path) -> Result<Duration> {
    let port = free_port()?.to_string();
    let mut receiver = Guard(
        Command::new("nc")
            .args(["-l", "127.0.0.1", &port])
            .stdout(File::create(output)?)
            .spawn()
            .context("running nc (apt-get install netcat-openbsd)")?,
    );
    // Until it listens (a probe connection would be taken for the transfer:
    // look for the socket in LISTEN state instead).
    let listening = format!(":{:04X} 00000000:0000 0A", port.parse::<u16>()?);
    for _ in 0..200 {
        if std::fs::read_to_string("/proc/net/tcp")?.contains(&listening) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let mut sender = Guard(
        Command::new("nc")
            .args(["-N", "127.0.0.1", &port])
            .stdin(File::open(input)?)
            .spawn()?,
    );
    wait(&mut receiver.0, "nc -l")?;
    let took = started.elapsed();
    wait(&mut sender.0, "nc -N")?;
    Ok(took)
}

/// `peerpipe serve` on a free port; its URL.
fn serve(dir: &Path) -> Result<(Guard, String)> {
    let mut child = peerpipe()
        .args(["serve", "--listen", "127.0.0.1:0", "--secret-file"])
        .arg(dir.join("secret"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    let guard = Guard(child);
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref().take(50) {
        if let Some(rest) = line?.split("listening on ").nth(1) {
            let url = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            // Keep reading: a closed pipe would fail the server's next log line.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((guard, url));
        }
    }
    bail!("peerpipe serve did not start")
}

fn run_peerpipe(dir: &Path, input: &Path, output: &Path) -> Result<(Duration, String)> {
    let (_server, url) = serve(dir)?;
    let token = output_of(
        peerpipe()
            .args(["token", "--user", "bench", "--secret-file"])
            .arg(dir.join("secret")),
    )?;
    let (a, b) = (dir.join("a.key"), dir.join("b.key"));
    let listener = output_of(peerpipe().arg("id").arg("--identity").arg(&b))?;
    let client = |cmd: &str, identity: &PathBuf| {
        let mut c = peerpipe();
        c.arg(cmd)
            .args(["--server", &url, "--token", &token, "--identity"])
            .arg(identity);
        c
    };
    let mut listen = Guard(
        client("listen", &b)
            .arg("-q")
            .stdout(File::create(output)?)
            .spawn()?,
    );
    let mut online = false;
    for _ in 0..100 {
        let peers = output_of(&mut client("peers", &a))?;
        if peers
            .lines()
            .any(|l| l.split('\t').next() == Some(&listener))
        {
            online = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(online, "the listener never came online");
    let started = Instant::now();
    let mut connect = Guard(
        client("connect", &a)
            .args(["-v", &listener])
            .stdin(File::open(input)?)
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let stderr = connect.0.stderr.take().context("no stderr")?;
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    wait(&mut listen.0, "peerpipe listen")?;
    let took = started.elapsed();
    wait(&mut connect.0, "peerpipe connect")?;
    let log = log.join().unwrap_or_default();
    let paths: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("path to ").nth(1))
        .collect();
    Ok((took, paths.join("; ")))
}

fn main() -> Result<()> {
    let mib = std::env::var("PEERPIPE_BENCH_E2E_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024u64)
        .max(1);
    let dir = std::env::temp_dir().join(format!("peerpipe-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&dir, mib);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(dir: &Path, mib: u64) -> Result<()> {
    let len = mib * MIB;
    let input = dir.join("input");
    let output = dir.join("output");
    write_input(&input, len, SEED)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{mib} MiB file to file on 127.0.0.1, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let nc = run_nc(&input, &output)?;
    ensure!(
        same_files(&input, &output)?,
        "nc: the received file differs"
    );
    std::fs::remove_file(&output)?;
    let (pp, paths) = run_peerpipe(dir, &input, &output)?;
    ensure!(
        same_files(&input, &output)?,
        "peerpipe: the received file differs"
    );
    let rate = |d: Duration| len as f64 / d.as_secs_f64().max(1e-9) / 1e6;
    println!("{:<34} {:>8} {:>9}", "transfer", "seconds", "MB/s");
    println!(
        "{:<34} {:>8.2} {:>9.1}",
        "nc -l / nc -N",
        nc.as_secs_f64(),
        rate(nc)
    );
    println!(
        "{:<34} {:>8.2} {:>9.1}",
        "peerpipe connect / listen",
        pp.as_secs_f64(),
        rate(pp)
    );
    println!(
        "peerpipe / nc: {:.2}x (paths: {})",
        rate(pp) / rate(nc),
        if paths.is_empty() {
            "relay only"
        } else {
            &paths
        }
    );
    Ok(())
}
