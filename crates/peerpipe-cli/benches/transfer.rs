//! Transfer benchmark: one file from disk to disk with `peerpipe send` /
//! `peerpipe receive`, next to `nc`, `sendme` and `magic-wormhole` in the same
//! run, every tool as separate processes on loopback.
//!
//! `cargo bench -p peerpipe-cli --bench transfer` writes a file of
//! `PEERPIPE_BENCH_TRANSFER_MIB` MiB (default 1024) of pseudo-random bytes, then
//! moves it with each tool in turn, `PEERPIPE_BENCH_TRANSFER_ROUNDS` times
//! (default 1; the table shows each tool's median run):
//!
//! - `nc` (the raw anchor): `nc -l 127.0.0.1 PORT > out`, then
//!   `nc -N 127.0.0.1 PORT < in`.
//! - `sendme`: `sendme send FILE --relay disabled --no-progress` prints a ticket
//!   once it has hashed the file; `sendme receive TICKET --relay disabled
//!   --no-progress` in an empty directory writes the file there. The sender
//!   serves until interrupted: it gets SIGINT once the receiver is done.
//! - `magic-wormhole`: a local mailbox server (`twist wormhole-mailbox`) and
//!   transit relay (`twist transitrelay`) on 127.0.0.1; `wormhole --relay-url
//!   ws://127.0.0.1:PORT/v1 --transit-helper tcp:127.0.0.1:PORT send
//!   --hide-progress --no-qr FILE` allocates a code, `wormhole ... receive
//!   --accept-file --hide-progress -o OUT CODE` fetches the file. Twice: with the
//!   direct connection the clients choose (they offer the host's non-loopback
//!   addresses, which still stay on this machine), and with `--no-listen` on both
//!   sides, which leaves the transit relay as the only way.
//! - `peerpipe`: `peerpipe serve` on 127.0.0.1, `peerpipe send FILE --server URL
//!   --identity A` prints a code (its only stdout line), `peerpipe receive CODE
//!   --server URL --identity B -o DIR` writes `DIR/<file name>`. A build without a
//!   `send` command skips the row. The sender runs with `-v`: its log names the
//!   paths it sends on (relay first, then QUIC once the direct path is open).
//!
//! `PEERPIPE_BENCH_TRANSFER_FILES=COUNTxSIZE` (for example `10000x4KiB` or
//! `100x1MiB`) moves a directory of COUNT files of SIZE pseudo-random bytes
//! each instead (1,000 to a subdirectory, no two alike), and every tool sends
//! the directory: `tar -c | nc` into `nc -l | tar -x` for the anchor, the
//! directory itself for the others. The tree that arrives is compared with the
//! sent one, name by name and byte for byte.
//!
//! Every sender and receiver runs in a fresh empty working directory (sendme
//! keeps its blob store there). A row is timed from the sender's start (so a
//! tool's hashing or key exchange counts) until the receiver has exited with the
//! file on disk; the receiver starts as soon as the sender has printed its code
//! or ticket. The received file is compared with the sent one byte for byte: a
//! difference fails the benchmark. MB/s is 10^6 bytes of the file per second of
//! that wall time; `code after` is the part of it before the code or ticket was
//! printed (sendme hashes the whole file first).
//!
//! Peak RSS: the `VmHWM` of each process in `/proc/PID/status`, polled every
//! 10 ms while it runs, summed over the process and its descendants (none of the
//! tools spawns any today). `VmHWM` is the kernel's own high-water mark, so the
//! polling only misses growth in the last few milliseconds of a process. It
//! counts file pages a tool maps, not only its heap. The servers column is the
//! same for the helper servers of a row (mailbox + transit relay, `peerpipe
//! serve`).
//!
//! The comparison tools are looked up in `PEERPIPE_BENCH_TOOLS` (default
//! `target/bench-tools`; a relative path is taken from the workspace root), in
//! the layout `scripts/bench-tools` installs: `sendme/bin/sendme` and the
//! virtualenv `wormhole/bin/{wormhole,twist}`. A missing tool, or one that
//! fails, skips its rows with the reason printed; `nc` and `peerpipe` failing
//! fail the benchmark. Every step is bounded in time and every child is killed
//! when the benchmark stops early. Needs `nc` (OpenBSD netcat, for `-N`).
//!
//! The Markdown table at the end adds each tool's MB/s relative to `nc`, then
//! `peerpipe`'s MB/s relative to each other tool (above 1× is faster).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
mod common;

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use common::files::{output_of, same_content, write_input, write_tree};
use common::{SEED, free_port};

const MIB: u64 = 1024 * 1024;
/// No transfer step may take longer than this.
const LIMIT: Duration = Duration::from_secs(600);
/// Time a helper server has to start listening.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Time an interrupted sender has to exit.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// How often peak RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// The file's name on both sides.
const FILE_NAME: &str = "payload.bin";
/// The directory's name on both sides, when the input is many files.
const DIR_NAME: &str = "payload";
/// The versions `scripts/bench-tools` installs (a different one is run, with a note).
const SENDME_VERSION: &str = "sendme 0.37.1";
const WORMHOLE_VERSION: &str = "magic-wormhole 0.24.0";

fn peerpipe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peerpipe"))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// What is moved: one file, or a directory of many.
#[derive(Clone, Copy)]
enum Shape {
    /// One file of this many bytes.
    File(u64),
    /// A directory of `count` files of `len` bytes each.
    Files { count: u64, len: u64 },
}

impl Shape {
    /// From `PEERPIPE_BENCH_TRANSFER_FILES` (`COUNTxSIZE`), else
    /// `PEERPIPE_BENCH_TRANSFER_MIB`.
    fn from_env() -> Result<Self> {
        let Ok(files) = std::env::var("PEERPIPE_BENCH_TRANSFER_FILES") else {
            return Ok(Self::File(
                env_u64("PEERPIPE_BENCH_TRANSFER_MIB", 1024) * MIB,
            ));
        };
        let (count, size) = files
            .split_once('x')
            .context("PEERPIPE_BENCH_TRANSFER_FILES is COUNTxSIZE, e.g. 10000x4KiB")?;
        let count: u64 = count.trim().parse().context("the count of files")?;
        let size = size.trim();
        let (digits, unit) = size.split_at(
            size.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(size.len()),
        );
        let unit = match unit {
            "" | "B" => 1,
            "KiB" => 1024,
            "MiB" => MIB,
            other => bail!("unknown size unit {other:?} (B, KiB or MiB)"),
        };
        let len = digits.parse::<u64>().context("the size of a file")? * unit;
        ensure!(count > 0 && len > 0, "no files, or empty ones");
        Ok(Self::Files { count, len })
    }

    /// All the bytes moved.
    fn bytes(self) -> u64 {
        match self {
            Self::File(len) => len,
            Self::Files { count, len } => count * len,
        }
    }

    /// The name the input has on both sides.
    fn name(self) -> &'static str {
        match self {
            Self::File(_) => FILE_NAME,
            Self::Files { .. } => DIR_NAME,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::File(len) => write!(f, "{} MiB file", len / MIB),
            Self::Files { count, len } if len % MIB == 0 => {
                write!(f, "{count} files of {} MiB", len / MIB)
            }
            Self::Files { count, len } if len % 1024 == 0 => {
                write!(f, "{count} files of {} KiB", len / 1024)
            }
            Self::Files { count, len } => write!(f, "{count} files of {len} B"),
        }
    }
}

fn main() -> Result<()> {
    let shape = Shape::from_env()?;
    let rounds = env_u64("PEERPIPE_BENCH_TRANSFER_ROUNDS", 1);
    let dir = std::env::temp_dir().join(format!("peerpipe-transfer-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&dir, shape, rounds);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// One measured transfer.
struct Row {
    tool: String,
    /// How the bytes went, as far as the tool tells.
    path: String,
    took: Duration,
    /// From the sender's start until it printed its code or ticket.
    code_after: Option<Duration>,
    sender_kib: u64,
    receiver_kib: u64,
    servers_kib: Option<u64>,
}

fn bench(dir: &Path, shape: Shape, rounds: u64) -> Result<()> {
    let len = shape.bytes();
    let input = dir.join(shape.name());
    match shape {
        Shape::File(len) => write_input(&input, len, SEED)?,
        Shape::Files { count, len } => write_tree(&input, count, len)?,
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{shape} to disk on 127.0.0.1, {rounds} round(s), load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let tools = Tools::find();
    let mut report = Report::default();
    // Rounds take every tool in turn, so a busy moment of the machine does not
    // fall on one tool's runs only.
    for round in 1..=rounds {
        if rounds > 1 {
            println!("round {round} of {rounds}");
        }
        run_round(dir, &input, len, &tools, &mut report)?;
    }
    report.print(len);
    Ok(())
}

/// One transfer with each tool.
fn run_round(dir: &Path, input: &Path, len: u64, tools: &Tools, report: &mut Report) -> Result<()> {
    let input = input.to_path_buf();
    report.rows.push(checked(dir, "nc", &input, len, run_nc)?);
    match &tools.sendme {
        Ok(sendme) => report.compare(
            "sendme",
            checked(dir, "sendme", &input, len, |dir, input| {
                run_sendme(dir, input, sendme)
            }),
        )?,
        Err(reason) => report.skip("sendme", reason),
    }
    for (name, relay) in [
        ("magic-wormhole direct", false),
        ("magic-wormhole relay", true),
    ] {
        match &tools.wormhole {
            Ok(bin) => report.compare(
                name,
                checked(dir, name, &input, len, |dir, input| {
                    run_wormhole(dir, input, bin, relay)
                }),
            )?,
            Err(reason) => report.skip(name, reason),
        }
    }
    if has_send_command() {
        report
            .rows
            .push(checked(dir, "peerpipe", &input, len, run_peerpipe)?);
    } else {
        report.skip("peerpipe", "no send command in this build");
    }
    Ok(())
}

/// The rows measured and the ones skipped, with the reason.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    skipped: Vec<String>,
}

impl Report {
    fn skip(&mut self, tool: &str, reason: &str) {
        println!("{tool}: skipped ({reason})");
        let line = format!("{tool}: {reason}");
        if !self.skipped.contains(&line) {
            self.skipped.push(line);
        }
    }

    /// Each tool's median run (by wall time), with the fastest and slowest
    /// times, in the order the tools first ran.
    fn medians(&self) -> Vec<(&Row, usize, f64, f64)> {
        let mut tools: Vec<&str> = Vec::new();
        for row in &self.rows {
            if !tools.contains(&row.tool.as_str()) {
                tools.push(&row.tool);
            }
        }
        tools
            .into_iter()
            .filter_map(|tool| {
                let mut runs: Vec<&Row> = self.rows.iter().filter(|r| r.tool == tool).collect();
                runs.sort_by_key(|r| r.took);
                let (first, last) = (runs.first()?, runs.last()?);
                let (min, max) = (first.took.as_secs_f64(), last.took.as_secs_f64());
                Some((runs[runs.len() / 2], runs.len(), min, max))
            })
            .collect()
    }

    /// A comparison tool's row; its failure skips it, unless its file differs.
    fn compare(&mut self, tool: &str, row: Result<Row>) -> Result<()> {
        match row {
            Ok(row) => self.rows.push(row),
            Err(e) if e.downcast_ref::<Mismatch>().is_some() => return Err(e),
            Err(e) => self.skip(tool, &format!("failed: {e:#}")),
        }
        Ok(())
    }

    fn print(&self, len: u64) {
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        let medians = self.medians();
        let rows: Vec<&Row> = medians.iter().map(|m| m.0).collect();
        let nc = rows
            .iter()
            .find(|r| r.tool == "nc")
            .map(|r| rate(len, r.took));
        println!();
        println!(
            "| tool | path | seconds (median) | runs: min–max s | code after s | MB/s | × nc | sender peak RSS MiB | receiver peak RSS MiB | servers peak RSS MiB |"
        );
        println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|");
        for &(row, runs, min, max) in &medians {
            let mbs = rate(len, row.took);
            println!(
                "| {} | {} | {:.2} | {runs}: {min:.2}–{max:.2} | {} | {:.1} | {} | {} | {} | {} |",
                row.tool,
                row.path,
                row.took.as_secs_f64(),
                row.code_after
                    .map_or("–".into(), |d| format!("{:.2}", d.as_secs_f64())),
                mbs,
                nc.map_or("–".into(), |nc| format!("{:.2}×", mbs / nc)),
                mib(row.sender_kib),
                mib(row.receiver_kib),
                row.servers_kib.map_or("–".into(), mib),
            );
        }
        println!();
        match rows.iter().find(|r| r.tool.starts_with("peerpipe")) {
            Some(pp) => {
                let pp_rate = rate(len, pp.took);
                for other in rows.iter().filter(|r| !r.tool.starts_with("peerpipe")) {
                    println!(
                        "- peerpipe/{}: {:.2}×",
                        other.tool,
                        pp_rate / rate(len, other.took)
                    );
                }
            }
            None => println!("- no peerpipe row, so no ratios against it"),
        }
        for line in &self.skipped {
            println!("- skipped {line}");
        }
    }
}

/// A received file that differs from the sent one: fails the benchmark, whatever
/// the tool.
#[derive(Debug)]
struct Mismatch {
    tool: String,
    output: PathBuf,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the received file differs ({})",
            self.tool,
            self.output.display()
        )
    }
}

impl std::error::Error for Mismatch {}

/// Runs one row in `dir/name` and checks what it leaves at the path it returns
/// against `input` (`len` bytes in all); removes the row's directory afterwards
/// when the input is one file.
fn checked(
    dir: &Path,
    name: &str,
    input: &Path,
    len: u64,
    run: impl FnOnce(&Path, &Path) -> Result<(Row, PathBuf)>,
) -> Result<Row> {
    // A fresh directory also in later rounds, where the earlier ones may remain.
    let row_dir = (1..)
        .map(|n| match n {
            1 => dir.join(name),
            n => dir.join(format!("{name}.{n}")),
        })
        .find(|d| !d.exists())
        .context("no free directory name")?;
    std::fs::create_dir_all(&row_dir)?;
    let result = run(&row_dir, input).and_then(|(row, output)| {
        let same = same_content(input, &output)
            .with_context(|| format!("{name}: reading {}", output.display()))?;
        if !same {
            let tool = name.to_owned();
            return Err(Mismatch { tool, output }.into());
        }
        Ok(row)
    });
    // Many files stay until the end: ext4 without a journal skips inodes freed in
    // the last 30–180 s at each new file, so a tool that runs right after a
    // deletion of thousands of files would pay for the tool before it.
    if !input.is_dir() {
        let _ = std::fs::remove_dir_all(&row_dir);
    }
    let row = result?;
    println!(
        "{:<28} {:>8.2} s {:>9.1} MB/s  ({})",
        row.tool,
        row.took.as_secs_f64(),
        rate(len, row.took),
        row.path
    );
    Ok(row)
}

/// The last part of `path`: the name the input has on both sides.
fn name_of(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

fn rate(len: u64, took: Duration) -> f64 {
    len as f64 / took.as_secs_f64().max(1e-9) / 1e6
}

/// Where the comparison tools are, or why not.
struct Tools {
    sendme: Result<PathBuf, String>,
    /// The virtualenv's `bin` directory (`wormhole`, `twist`).
    wormhole: Result<PathBuf, String>,
}

impl Tools {
    fn find() -> Self {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest
            .join("../..")
            .canonicalize()
            .unwrap_or(manifest.join("../.."));
        let dir = std::env::var_os("PEERPIPE_BENCH_TOOLS")
            .map_or_else(|| root.join("target/bench-tools"), |d| root.join(d));
        let hint = "install with scripts/bench-tools";
        if !dir.is_dir() {
            let reason = format!(
                "no tools directory {} (PEERPIPE_BENCH_TOOLS); {hint}",
                dir.display()
            );
            return Self {
                sendme: Err(reason.clone()),
                wormhole: Err(reason),
            };
        }
        let sendme = dir.join("sendme/bin/sendme");
        let bin = dir.join("wormhole/bin");
        let missing = |p: &Path| format!("no {}; {hint}", p.display());
        Self {
            sendme: if sendme.is_file() {
                Ok(sendme)
            } else {
                Err(missing(&sendme))
            },
            wormhole: match ["wormhole", "twist"].map(|b| bin.join(b)) {
                [w, t] if w.is_file() && t.is_file() => Ok(bin),
                [w, t] => Err(missing(if w.is_file() { &t } else { &w })),
            },
        }
    }
}

/// `--version` output of a tool, with a note when it is not `expected`.
fn version(program: &Path, expected: &str) -> Result<String> {
    let got = output_of(Command::new(program).arg("--version"))?;
    let got = got.lines().next().unwrap_or_default().trim().to_owned();
    if got != expected {
        println!(
            "note: {} is {got:?}, expected {expected:?}",
            program.display()
        );
    }
    Ok(got)
}

fn has_send_command() -> bool {
    peerpipe()
        .args(["send", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// --- The rows ---------------------------------------------------------------

fn run_nc(dir: &Path, input: &Path) -> Result<(Row, PathBuf)> {
    let output = dir.join(name_of(input));
    let port = free_port()?;
    let tree = input.is_dir();
    let mut listen = if tree {
        // `nc -l … | tar -x` in `dir`: the tree arrives as `dir/NAME`.
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("nc -l 127.0.0.1 {port} | tar -xf -"))
            .current_dir(dir);
        c
    } else {
        let mut c = Command::new("nc");
        c.args(["-l", "127.0.0.1", &port.to_string()])
            .stdout(File::create(&output)?);
        c
    };
    let mut receiver = Guard::spawn(&mut listen, "nc -l (apt-get install netcat-openbsd)")?;
    let receiver_rss = PeakRss::watch(receiver.id());
    // A probe connection would be taken for the transfer: wait for LISTEN.
    wait_listening(port, &mut receiver)?;
    let mut connect = if tree {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("tar -cf - \"$0\" | nc -N 127.0.0.1 {port}"))
            .arg(name_of(input))
            .current_dir(input.parent().context("the input has a parent")?);
        c
    } else {
        let mut c = Command::new("nc");
        c.args(["-N", "127.0.0.1", &port.to_string()])
            .stdin(File::open(input)?);
        c
    };
    let started = Instant::now();
    let mut sender = Guard::spawn(&mut connect, "nc -N")?;
    let sender_rss = PeakRss::watch(sender.id());
    receiver.wait_ok(LIMIT)?;
    let took = started.elapsed();
    sender.wait_ok(LIMIT)?;
    let row = Row {
        tool: "nc".into(),
        path: if tree {
            "tar over TCP 127.0.0.1"
        } else {
            "TCP 127.0.0.1"
        }
        .into(),
        took,
        code_after: None,
        sender_kib: sender_rss.finish(),
        receiver_kib: receiver_rss.finish(),
        servers_kib: None,
    };
    Ok((row, output))
}

fn run_sendme(dir: &Path, input: &Path, sendme: &Path) -> Result<(Row, PathBuf)> {
    let tool = version(sendme, SENDME_VERSION)?;
    let quiet = ["--relay", "disabled", "--no-progress"];
    let sender = || {
        let mut c = Command::new(sendme);
        c.arg("send").arg(input).args(quiet);
        c
    };
    let receiver = |ticket: &str| {
        let mut c = Command::new(sendme);
        c.args(["receive", ticket]).args(quiet);
        c
    };
    // "sendme receive blob…" on stdout, once the file is hashed.
    let ticket = |_: Pipe, line: &str| {
        let rest = line.split("sendme receive ").nth(1)?;
        rest.split_whitespace().next().map(str::to_owned)
    };
    let run = transfer(
        dir,
        "sendme",
        &sender,
        ticket,
        &receiver,
        SenderEnd::Interrupt,
    )?;
    let row = Row {
        tool,
        path: "QUIC (iroh, relay disabled)".into(),
        took: run.took,
        code_after: Some(run.code_after),
        sender_kib: run.sender_kib,
        receiver_kib: run.receiver_kib,
        servers_kib: None,
    };
    Ok((row, dir.join("recv").join(name_of(input))))
}

fn run_wormhole(dir: &Path, input: &Path, bin: &Path, relay: bool) -> Result<(Row, PathBuf)> {
    let wormhole = bin.join("wormhole");
    let tool = version(&wormhole, WORMHOLE_VERSION)?;
    let twist = bin.join("twist");
    let (mailbox_port, transit_port) = (free_port()?, free_port()?);
    let mut mailbox = Guard::spawn(
        Command::new(&twist)
            .arg("wormhole-mailbox")
            .arg(format!("--port=tcp:{mailbox_port}:interface=127.0.0.1"))
            .arg(format!(
                "--channel-db={}",
                dir.join("mailbox.sqlite").display()
            ))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "twist wormhole-mailbox",
    )?;
    let mut transit = Guard::spawn(
        Command::new(&twist)
            .arg("transitrelay")
            .arg(format!("--port=tcp:{transit_port}:interface=127.0.0.1"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "twist transitrelay",
    )?;
    let servers_rss = PeakRss::watch_all(&[mailbox.id(), transit.id()]);
    wait_listening(mailbox_port, &mut mailbox)?;
    wait_listening(transit_port, &mut transit)?;
    let client = || {
        let mut c = Command::new(&wormhole);
        c.arg("--relay-url")
            .arg(format!("ws://127.0.0.1:{mailbox_port}/v1"))
            .arg("--transit-helper")
            .arg(format!("tcp:127.0.0.1:{transit_port}"));
        c
    };
    let no_listen: &[&str] = if relay { &["--no-listen"] } else { &[] };
    let sender = || {
        let mut c = client();
        c.arg("send")
            .args(no_listen)
            .args(["--hide-progress", "--no-qr"])
            .arg(input);
        c
    };
    let output = dir.join(name_of(input));
    let receiver = |code: &str| {
        let mut c = client();
        c.arg("receive")
            .args(no_listen)
            .args(["--accept-file", "--hide-progress", "-o"])
            .arg(&output)
            .arg(code);
        c
    };
    // "Wormhole code is: 3-scavenger-befriend" on stderr.
    let code = |_: Pipe, line: &str| {
        let rest = line.split("Wormhole code is: ").nth(1)?;
        rest.split_whitespace().next().map(str::to_owned)
    };
    let run = transfer(dir, "wormhole", &sender, code, &receiver, SenderEnd::Exits)?;
    // "Receiving (->tcp:192.0.2.2:43439).." or "Receiving (->relay:tcp:…)..".
    let via = run
        .receiver_log
        .lines()
        .find_map(|l| l.split("Receiving (->").nth(1))
        .and_then(|rest| rest.split(')').next())
        .unwrap_or("?");
    let path = match (relay, via.starts_with("relay:")) {
        (false, false) => format!("direct TCP ({via})"),
        (true, true) => format!("transit relay ({via})"),
        (false, true) => format!("direct not taken: {via}"),
        (true, false) => bail!("--no-listen did not force the transit relay: {via}"),
    };
    let row = Row {
        tool: format!("{tool} {}", if relay { "relay" } else { "direct" }),
        path,
        took: run.took,
        code_after: Some(run.code_after),
        sender_kib: run.sender_kib,
        receiver_kib: run.receiver_kib,
        servers_kib: Some(servers_rss.finish()),
    };
    Ok((row, output))
}

fn run_peerpipe(dir: &Path, input: &Path) -> Result<(Row, PathBuf)> {
    let (server, url) = serve(dir)?;
    let servers_rss = PeakRss::watch(server.id());
    // `peerpipe send FILE …` / `peerpipe receive CODE …`.
    let client = |flags: &[&str], cmd: &str, what: &OsStr, identity: &str| {
        let mut c = peerpipe();
        c.args(flags)
            .arg(cmd)
            .arg(what)
            .args(["--server", &url, "--identity"])
            .arg(dir.join(identity));
        c
    };
    // -v: the sender logs the paths it sends on (a few lines per transfer).
    let sender = || client(&["-v"], "send", input.as_os_str(), "a.key");
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir)?;
    let receiver = |code: &str| {
        let mut c = client(&[], "receive", code.as_ref(), "b.key");
        c.arg("-o").arg(&out_dir);
        c
    };
    // The code is the only line on stdout.
    let code = |pipe: Pipe, line: &str| {
        let line = line.trim();
        (pipe == Pipe::Out && !line.is_empty()).then(|| line.to_owned())
    };
    // Whether the sender exits by itself or serves until interrupted, both are fine.
    let end = SenderEnd::ExitsOrInterrupt(Duration::from_secs(5));
    let run = transfer(dir, "peerpipe", &sender, code, &receiver, end)?;
    // "… sending on the quic path session=…", at every switch of path.
    let mut paths: Vec<&str> = Vec::new();
    for line in run.sender_log.lines() {
        let path = line
            .split("sending on the ")
            .nth(1)
            .and_then(|rest| rest.split(" path").next());
        if let Some(path) = path.filter(|p| paths.last() != Some(p)) {
            paths.push(path);
        }
    }
    let row = Row {
        tool: "peerpipe send/receive".into(),
        path: if paths.is_empty() {
            "?".into()
        } else {
            paths.join(" → ")
        },
        took: run.took,
        code_after: Some(run.code_after),
        sender_kib: run.sender_kib,
        receiver_kib: run.receiver_kib,
        servers_kib: Some(servers_rss.finish()),
    };
    drop(server);
    Ok((row, out_dir.join(name_of(input))))
}

/// `peerpipe serve` on a free port; its URL.
fn serve(dir: &Path) -> Result<(Guard, String)> {
    let mut server = Guard::spawn(
        peerpipe()
            .args(["serve", "--listen", "127.0.0.1:0", "--secret-file"])
            .arg(dir.join("secret"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "peerpipe serve",
    )?;
    let mut log = Lines::of(&mut server.child);
    let url = log
        .find(START_LIMIT, |_, line| {
            let rest = line.split("listening on ").nth(1)?;
            rest.split_whitespace().next().map(str::to_owned)
        })
        .context("peerpipe serve did not start")?;
    // The reader threads keep draining the pipe: a closed one would fail the
    // server's next log line.
    Ok((server, url))
}

// --- One transfer between two processes -------------------------------------

/// How a sender ends once its receiver has the file.
#[derive(Clone, Copy)]
enum SenderEnd {
    /// It exits by itself, successfully.
    Exits,
    /// It serves until interrupted: SIGINT at once.
    Interrupt,
    /// Either: if it has not exited successfully within the grace time, SIGINT.
    ExitsOrInterrupt(Duration),
}

/// What [`transfer`] measured.
struct Run {
    took: Duration,
    code_after: Duration,
    sender_kib: u64,
    receiver_kib: u64,
    sender_log: String,
    receiver_log: String,
}

/// Starts the sender (in `dir/send`), waits for the code it prints, starts the
/// receiver with it (in `dir/recv`), and times from the sender's start until
/// the receiver has exited successfully.
fn transfer(
    dir: &Path,
    tool: &str,
    sender: &dyn Fn() -> Command,
    code: impl FnMut(Pipe, &str) -> Option<String>,
    receiver: &dyn Fn(&str) -> Command,
    end: SenderEnd,
) -> Result<Run> {
    let (send_dir, recv_dir) = (dir.join("send"), dir.join("recv"));
    std::fs::create_dir_all(&send_dir)?;
    std::fs::create_dir_all(&recv_dir)?;
    let mut command = sender();
    let started = Instant::now();
    let mut send = Guard::spawn(
        command
            .current_dir(&send_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        &format!("{tool} sender"),
    )?;
    let sender_rss = PeakRss::watch(send.id());
    let mut send_log = Lines::of(&mut send.child);
    let code = send_log
        .find(LIMIT, code)
        .with_context(|| format!("{}: no code", send.what))?;
    let code_after = started.elapsed();
    let mut command = receiver(&code);
    let mut recv = Guard::spawn(
        command
            .current_dir(&recv_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        &format!("{tool} receiver"),
    )?;
    let receiver_rss = PeakRss::watch(recv.id());
    let recv_log = Lines::of(&mut recv.child);
    let received = recv.wait_ok(LIMIT);
    let took = started.elapsed();
    let receiver_log = recv_log.rest();
    if let Err(e) = received {
        bail!("{e:#}; its output:\n{}", tail(&receiver_log));
    }
    let ended = match end {
        SenderEnd::Exits => send.wait_ok(LIMIT),
        SenderEnd::Interrupt => send.interrupt(),
        SenderEnd::ExitsOrInterrupt(grace) => match send.wait(grace)? {
            Some(status) => ensure_success(status, &send.what),
            None => send.interrupt(),
        },
    };
    let sender_log = send_log.rest();
    if let Err(e) = ended {
        bail!("{e:#}; its output:\n{}", tail(&sender_log));
    }
    Ok(Run {
        took,
        code_after,
        sender_kib: sender_rss.finish(),
        receiver_kib: receiver_rss.finish(),
        sender_log,
        receiver_log,
    })
}

/// The last lines of a log, for an error message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn ensure_success(status: ExitStatus, what: &str) -> Result<()> {
    ensure!(status.success(), "{what} failed: {status}");
    Ok(())
}

// --- Processes ---------------------------------------------------------------

/// A child that is killed, with its descendants, if the benchmark stops early.
///
/// Descendants are found in `/proc` at that moment: ones already orphaned (their
/// parent exited) are out of reach. A Ctrl-C on the terminal reaches them all
/// (one process group).
struct Guard {
    child: Child,
    /// What it is, for messages.
    what: String,
}

impl Guard {
    fn spawn(command: &mut Command, what: &str) -> Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self {
            child,
            what: what.to_owned(),
        })
    }

    fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the child to exit; `None` if it is still running.
    fn wait(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `limit` for the child to exit successfully.
    fn wait_ok(&mut self, limit: Duration) -> Result<()> {
        match self.wait(limit)? {
            Some(status) => ensure_success(status, &self.what),
            None => bail!("{} did not finish in {limit:?}", self.what),
        }
    }

    /// SIGINT to the child and its descendants (what Ctrl-C does: tools clean up
    /// on it), then waits for the child's exit; its status does not matter.
    fn interrupt(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        signal(&self.tree(), "INT")?;
        match self.wait(STOP_LIMIT)? {
            Some(_) => Ok(()),
            None => bail!("{} ignored SIGINT for {STOP_LIMIT:?}", self.what),
        }
    }

    /// The child's pid after its descendants'.
    fn tree(&self) -> Vec<u32> {
        let mut pids = descendants(&[self.id()]);
        pids.push(self.id());
        pids
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = signal(&self.tree(), "KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -SIGNAL PIDS`.
fn signal(pids: &[u32], signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill -{signal} {pids:?}: {status}");
    Ok(())
}

/// Which of a child's output streams a line came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pipe {
    Out,
    Err,
}

/// A child's stdout and stderr, line by line, read by threads that keep
/// draining them (a full pipe would stall the child).
struct Lines {
    lines: Receiver<(Pipe, String)>,
    /// Everything received so far.
    seen: String,
}

impl Lines {
    /// Takes whichever of `child`'s stdout and stderr are piped.
    fn of(child: &mut Child) -> Self {
        let (tx, lines) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            Self::read(out, Pipe::Out, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            Self::read(err, Pipe::Err, tx);
        }
        Self {
            lines,
            seen: String::new(),
        }
    }

    fn read(pipe: impl Read + Send + 'static, which: Pipe, tx: Sender<(Pipe, String)>) {
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                // After the receiving side is gone, keep draining.
                let _ = tx.send((which, text));
            }
        });
    }

    /// The first `f(pipe, line)` that is `Some`, within `limit`.
    fn find<T>(
        &mut self,
        limit: Duration,
        mut f: impl FnMut(Pipe, &str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((pipe, line)) => {
                    self.seen.push_str(&line);
                    if let Some(found) = f(pipe, &line) {
                        return Ok(found);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("nothing after {limit:?}; output:\n{}", tail(&self.seen))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("it exited; output:\n{}", tail(&self.seen))
                }
            }
        }
    }

    /// Everything the child wrote, once it has exited (waits up to a second for
    /// the pipes to close: a descendant may still hold them).
    fn rest(mut self) -> String {
        while let Ok((_, line)) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.seen.push_str(&line);
        }
        self.seen
    }
}

/// Peak resident memory of process trees: each process's `VmHWM`, polled from
/// `/proc` while it runs, summed over the tree.
struct PeakRss {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl PeakRss {
    fn watch(pid: u32) -> Self {
        Self::watch_all(&[pid])
    }

    fn watch_all(roots: &[u32]) -> Self {
        let roots = roots.to_vec();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks: HashMap<u32, u64> = HashMap::new();
            let mut tick = 0u32;
            let mut tree: HashSet<u32> = roots.iter().copied().collect();
            while !stopped.load(Ordering::Relaxed) {
                // Finding descendants scans all of /proc: only every 10th tick.
                if tick.is_multiple_of(10) {
                    tree.extend(descendants(&roots));
                }
                tick += 1;
                for &pid in &tree {
                    if let Some(kib) = vm_hwm_kib(pid) {
                        let peak = peaks.entry(pid).or_default();
                        *peak = (*peak).max(kib);
                    }
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            peaks.values().sum()
        });
        Self { stop, thread }
    }

    /// Stops sampling: the peak so far, in KiB.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// `VmHWM` of a process, in KiB; `None` once it has exited.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// All living descendants of `roots`, from the parent pids in `/proc/*/stat`.
fn descendants(roots: &[u32]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the parenthesised name: state, then the parent pid.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            Some((pid, ppid.parse().ok()?))
        })
        .collect();
    let mut found: Vec<u32> = Vec::new();
    let mut frontier = roots.to_vec();
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// Waits until something listens on 127.0.0.1:`port` (from `/proc/net/tcp`,
/// without connecting), as long as `child` runs.
fn wait_listening(port: u16, child: &mut Guard) -> Result<()> {
    let what = &child.what;
    let listening = format!(":{port:04X} 00000000:0000 0A");
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if std::fs::read_to_string("/proc/net/tcp")?.contains(&listening) {
            return Ok(());
        }
        if let Some(status) = child.child.try_wait()? {
            bail!("{what} exited before listening on port {port}: {status}");
        }
        ensure!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within {START_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
