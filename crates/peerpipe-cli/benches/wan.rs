//! WAN benchmark: peerpipe next to nc over emulated real links.
//!
//! `cargo bench -p peerpipe-cli --bench wan` builds, in network namespaces of
//! its own, three hosts — sender `a`, receiver `b`, server `s` — joined by
//! `peerpipe-netem` links (per direction: one-way delay, jitter, Bernoulli or
//! bursty loss, rate limit, 1,000-packet drop-tail queue), and for each
//! profile moves one file of pseudo-random bytes:
//!
//! - `nc -l` on `b` / `nc -N` from `a` (TCP with the kernel's default
//!   congestion control, the direct path: one link);
//! - `peerpipe connect` → `listen`: the default path, `--relay-only` (two
//!   links, through `s`) and `--no-quic` (a WebRTC data channel);
//! - `peerpipe send` → `receive`: the default path and `--relay-only`.
//!
//! Each row is timed from the sender's start until the receiver has exited,
//! after a byte-for-byte comparison, and set against nc's time in the same
//! run ("× nc" is peerpipe's time over nc's: lower is better, 1.00 is a tie).
//! A run that does not finish within the limit is reported as unfinished.
//!
//! Environment: `PEERPIPE_BENCH_WAN_MIB` (default 64), `PEERPIPE_BENCH_WAN_PROFILES`
//! (comma-separated names out of lossy, distant, long-fat, bursty; default
//! all), `PEERPIPE_BENCH_WAN_LIMIT` (seconds a run may take, default 120),
//! `PEERPIPE_BENCH_WAN_SEED` (the links' seed, default 1), `PEERPIPE_BENCH_WAN_ROWS`
//! (only the rows whose name contains this, e.g. `no-quic`). Needs `unshare`,
//! `nsenter`, `ip` and `nc` (OpenBSD netcat).

#[path = "../tests/common/wan.rs"]
mod wan;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use peerpipe_netem::{Entered, Profile, enter};
use wan::Wan;
use wan::files::write_input;

const MIB: u64 = 1024 * 1024;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    match enter(&[])? {
        Entered::Ran(status) if status.success() => Ok(()),
        Entered::Ran(status) => bail!("the benchmark inside the namespaces failed: {status}"),
        Entered::Inside => bench(),
    }
}

/// One row of the report.
struct Row {
    what: &'static str,
    flags: &'static [&'static str],
    send_receive: bool,
}

const ROWS: &[Row] = &[
    Row {
        what: "stream, default path",
        flags: &[],
        send_receive: false,
    },
    Row {
        what: "stream, --relay-only",
        flags: &["--relay-only"],
        send_receive: false,
    },
    Row {
        what: "stream, --no-quic",
        flags: &["--no-quic"],
        send_receive: false,
    },
    Row {
        what: "send/receive, default path",
        flags: &[],
        send_receive: true,
    },
    Row {
        what: "send/receive, --relay-only",
        flags: &["--relay-only"],
        send_receive: true,
    },
];

fn bench() -> Result<()> {
    let mib: u64 = env_or("PEERPIPE_BENCH_WAN_MIB", 64u64).max(1);
    let limit = Duration::from_secs(env_or("PEERPIPE_BENCH_WAN_LIMIT", 120u64));
    let seed: u64 = env_or("PEERPIPE_BENCH_WAN_SEED", 1u64);
    let profiles = match std::env::var("PEERPIPE_BENCH_WAN_PROFILES") {
        Ok(names) => names
            .split(',')
            .map(|n| Profile::named(n.trim()).with_context(|| format!("no profile {n:?}")))
            .collect::<Result<Vec<_>>>()?,
        Err(_) => Profile::all(),
    };
    let dir = std::env::temp_dir().join(format!("peerpipe-wan-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let input = dir.join("input.bin");
        write_input(&input, mib * MIB, 0x9e37_79b9_7f4a_7c15)?;
        println!(
            "{mib} MiB end to end over emulated links (sender, receiver and server in their own namespaces; seed {seed})"
        );
        for profile in &profiles {
            run_profile(&dir, &input, profile, seed, limit, mib)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_profile(
    dir: &Path,
    input: &Path,
    profile: &Profile,
    seed: u64,
    limit: Duration,
    mib: u64,
) -> Result<()> {
    let mut wan = Wan::start(&profile.link, seed, &dir.join(profile.name))?;
    wan.limit = limit;
    println!("\n{}: {}", profile.name, profile.about);
    println!("| transfer | path | seconds | Mbit/s | × nc |");
    println!("|---|---|---|---|---|");
    let mbit = |d: Duration| (mib * MIB * 8) as f64 / d.as_secs_f64().max(1e-9) / 1e6;
    let output = wan.path("output.bin");
    let nc = wan.nc(input, &output)?;
    println!(
        "| nc | direct TCP | {:.1} | {:.1} | 1.00 |",
        nc.as_secs_f64(),
        mbit(nc)
    );
    let only = std::env::var("PEERPIPE_BENCH_WAN_ROWS").unwrap_or_default();
    for row in ROWS.iter().filter(|r| r.what.contains(only.as_str())) {
        let _ = std::fs::remove_file(&output);
        let out = wan.path("received");
        let _ = std::fs::remove_dir_all(&out);
        let run = if row.send_receive {
            wan.send_receive(&[input], &out, row.flags)
        } else {
            wan.stream(input, &output, row.flags)
        };
        match run {
            Ok(run) => println!(
                "| {} | {} | {:.1} | {:.1} | {:.2} |",
                row.what,
                run.paths,
                run.took.as_secs_f64(),
                mbit(run.took),
                run.took.as_secs_f64() / nc.as_secs_f64()
            ),
            Err(e) => {
                println!(
                    "| {} | — | unfinished after {} s | — | > {:.2} |",
                    row.what,
                    limit.as_secs(),
                    limit.as_secs_f64() / nc.as_secs_f64()
                );
                eprintln!("{}: {e:#}", row.what);
            }
        }
    }
    Ok(())
}
