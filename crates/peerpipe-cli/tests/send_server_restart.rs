//! Killing the server (SIGKILL) in the middle of a 192 MiB `peerpipe send
//! --relay-only` → `peerpipe receive --relay-only` and starting it again on the
//! same port with the same secret: both devices reconnect, the receiver routes
//! the code's connection again, and the file arrives verified and identical —
//! although the code itself died with the old server.

mod common;

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::files::write_input;
use common::{
    KillOnDrop, ServeProcess, TempDir, receive_command, same_bytes, spawn_send_with, stderr_of,
    wait_timeout,
};

const MIB: u64 = 1024 * 1024;
/// Relayed frames per second and connection: tens of MB/s, so that the
/// receiver's progress events (two a second) see the kill point well before
/// the end, in a release build too.
const SERVE: &[&str] = &["--relay-rate", "1000"];
/// The file sent.
const SIZE: u64 = 192 * MIB;
/// The server is killed once the receiver reports this much verified.
const KILL_AT: u64 = 24 * MIB;
/// How long the server stays dead.
const DOWN_FOR: Duration = Duration::from_millis(750);
/// Until `KILL_AT` has arrived: hashing, the code exchange and 24 MiB through
/// the relay at debug-build speed, with ample slack.
const START_BOUND: Duration = Duration::from_secs(60);
/// From the restart until progress is reported again: the next reconnect
/// attempts of both devices (backoff from 250 ms, within ~2 s), admission and
/// routing the connection again. Below the 30 s idle time-out after which the
/// connection would end, so a connection that waits that long fails here.
const RESUME_BOUND: Duration = Duration::from_secs(20);
/// Progress counts as flowing again once this much more arrived than at the
/// restart.
const RESUMED_MARGIN: u64 = 4 * MIB;
/// From the resumption until both exit: the rest at debug-build speed, with
/// ample slack.
const FINISH_BOUND: Duration = Duration::from_secs(120);

/// Polls until `done` passes `past`, bounded by `bound`; `Err` with a reason when
/// the bound passes or the receiver exits first.
fn wait_done(
    done: &AtomicU64,
    past: u64,
    bound: Duration,
    receiver: &mut KillOnDrop,
) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    while done.load(Ordering::Relaxed) <= past {
        if let Some(status) = receiver.try_wait().unwrap() {
            return Err(format!(
                "the receiver exited ({status}) at {} bytes verified",
                done.load(Ordering::Relaxed)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "stuck at {} bytes verified for {bound:?}",
                done.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[test]
fn a_relay_only_send_survives_a_server_restart() {
    let dir = TempDir::new("send-restart");
    let mut server = ServeProcess::start_with(&dir.0, SERVE);
    let addr = server.addr().to_string();
    let source = dir.path("big.bin");
    write_input(&source, SIZE, 7).unwrap();
    let out = dir.path("out");
    let receive_log = dir.path("receive.log");

    let mut sender = spawn_send_with(&server, &dir.path("sender"), &[&source], &["--relay-only"]);
    let mut receiver = KillOnDrop(
        receive_command(
            &server,
            &dir.path("receiver"),
            &sender.code,
            &out,
            &["--json", "--relay-only"],
        )
        .stdout(Stdio::piped())
        .stderr(File::create(&receive_log).unwrap())
        .spawn()
        .unwrap(),
    );
    // The receiver's progress events, read on a thread so that it never blocks
    // on a full pipe.
    let done = Arc::new(AtomicU64::new(0));
    let events = BufReader::new(receiver.stdout.take().unwrap());
    std::thread::spawn({
        let done = done.clone();
        move || {
            for line in events.lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if event["event"] == "progress" {
                    done.fetch_max(event["done"].as_u64().unwrap_or(0), Ordering::Relaxed);
                }
            }
        }
    });
    let logs = |sender: &mut KillOnDrop| {
        let _ = sender.kill();
        format!(
            "\n--- send stderr ---\n{}--- receive stderr ---\n{}",
            stderr_of(sender),
            std::fs::read_to_string(&receive_log).unwrap_or_default()
        )
    };

    let started = Instant::now();
    if let Err(e) = wait_done(&done, KILL_AT, START_BOUND, &mut receiver) {
        panic!("before the restart: {e}{}", logs(&mut sender.child));
    }
    let before_kill = started.elapsed();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let at_kill = done.load(Ordering::Relaxed);
    std::thread::sleep(DOWN_FOR);
    server = ServeProcess::start_on_with(&addr, &server.secret_file, Duration::from_secs(5), SERVE);
    let restarted = Instant::now();
    let at_restart = done.load(Ordering::Relaxed);
    assert!(
        at_restart < SIZE - RESUMED_MARGIN,
        "the transfer was nearly over before the restart ({at_restart} bytes): nothing tested"
    );
    if let Err(e) = wait_done(
        &done,
        at_restart + RESUMED_MARGIN,
        RESUME_BOUND,
        &mut receiver,
    ) {
        panic!("after the restart: {e}{}", logs(&mut sender.child));
    }
    let resumed = restarted.elapsed();

    let Some(status) = wait_timeout(&mut receiver, FINISH_BOUND) else {
        panic!(
            "the receiver did not finish within {FINISH_BOUND:?} after resuming{}",
            logs(&mut sender.child)
        );
    };
    let receive_err = std::fs::read_to_string(&receive_log).unwrap_or_default();
    assert!(
        status.success(),
        "receive failed{}",
        logs(&mut sender.child)
    );
    let Some(sent) = wait_timeout(&mut sender.child, Duration::from_secs(30)) else {
        panic!("send did not exit{}", logs(&mut sender.child));
    };
    let send_err = stderr_of(&mut sender.child);
    assert!(
        sent.success(),
        "send failed\n--- send stderr ---\n{send_err}--- receive stderr ---\n{receive_err}"
    );
    assert!(same_bytes(&source, &out.join("big.bin")));
    eprintln!(
        "{:.1} MiB verified at the kill ({before_kill:.2?} in), progress again \
         {resumed:.2?} after the restart",
        at_kill as f64 / MIB as f64
    );
    drop(server);
}
