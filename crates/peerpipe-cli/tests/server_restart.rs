//! Killing the server (SIGKILL) in the middle of a 200 MiB `peerpipe connect` →
//! `peerpipe listen` stream and starting it again on the same port with the same
//! secret: both nodes reconnect, the dialing side routes the connection again, and
//! the receiver ends up with a byte-identical copy — nothing lost, nothing repeated.

mod common;

use std::fs::File;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::pattern::{Logs, finish, spawn_reader, spawn_writer, wait_progress};
use common::{KillOnDrop, ServeProcess, TempDir, client, device_id, wait_online};

const MIB: u64 = 1024 * 1024;
/// Total bytes offered on stdin.
const TOTAL: u64 = 200 * MIB;
/// The server is killed once this much has arrived at the receiver.
const KILL_AT: u64 = 40 * MIB;
/// How long the server stays dead.
const DOWN_FOR: Duration = Duration::from_millis(750);
/// Until `KILL_AT` has arrived: connection set-up plus 40 MiB at debug-build speed
/// (50-100 MB/s), with ample slack.
const START_BOUND: Duration = Duration::from_secs(60);
/// From the restart until bytes flow again: the next reconnect attempt (backoff
/// 250 ms doubling, ±50% jitter: within ~2 s after a 1 s outage), admission and
/// routing the connection again. Below the 30 s idle time-out after which the
/// connection would end, so a connection that waits that long fails here.
const RESUME_BOUND: Duration = Duration::from_secs(25);
/// The stream counts as flowing again once this much more arrived than before the
/// restart: more than any leftover the listener still writes out after the kill
/// (its stdout is line-buffered, so a chunk's tail after the last b'\n' can sit
/// there until its next write or its exit).
const RESUMED_MARGIN: u64 = MIB;
/// From the resumption until both clients exit: the remaining 160 MiB at
/// debug-build speed, with ample slack.
const FINISH_BOUND: Duration = Duration::from_secs(90);
#[test]
fn a_stream_survives_a_server_restart_byte_for_byte() {
    let dir = TempDir::new("restart");
    let mut server = ServeProcess::start(&dir.0);
    let addr = server.addr().to_string();
    let token = server.token("erin");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let listener_id = device_id(&b);
    let logs = Logs {
        connect: dir.path("connect.log"),
        listen: dir.path("listen.log"),
    };

    let mut listen = KillOnDrop(
        client("listen", &[], &server, &token, &b)
            .stdout(Stdio::piped())
            .stderr(File::create(&logs.listen).unwrap())
            .spawn()
            .unwrap(),
    );
    let listen_out = listen.stdout.take().unwrap();
    wait_online(&server, &token, &a, &listener_id);

    let mut connect = KillOnDrop(
        client("connect", &[&listener_id], &server, &token, &a)
            .stdin(Stdio::piped())
            .stderr(File::create(&logs.connect).unwrap())
            .spawn()
            .unwrap(),
    );
    let stdin = connect.stdin.take().unwrap();
    let (writer, written) = spawn_writer(stdin, TOTAL);
    let (reader, received) = spawn_reader(listen_out);

    let started = Instant::now();
    if let Err(e) = wait_progress(
        &received,
        KILL_AT,
        START_BOUND,
        &mut [&mut connect, &mut listen],
    ) {
        panic!("before the restart: {e}{}", logs.show());
    }
    let before_kill = started.elapsed();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let killed = Instant::now();
    let at_kill = received.load(Ordering::Relaxed);
    std::thread::sleep(DOWN_FOR);
    let at_restart = received.load(Ordering::Relaxed);
    server = ServeProcess::start_on(&addr, &server.secret_file, Duration::from_secs(5));
    let restarted = Instant::now();
    if let Err(e) = wait_progress(
        &received,
        at_restart + RESUMED_MARGIN,
        RESUME_BOUND,
        &mut [&mut connect, &mut listen],
    ) {
        panic!("after the restart: {e}{}", logs.show());
    }
    let resumed = Instant::now();

    let connect_status = finish(
        &mut connect,
        "connect",
        FINISH_BOUND,
        &received,
        TOTAL,
        &logs,
    );
    let listen_status = finish(&mut listen, "listen", FINISH_BOUND, &received, TOTAL, &logs);
    let done = Instant::now();
    writer.join().unwrap();
    let got = reader.join().unwrap();

    eprintln!(
        "{at_kill} bytes ({:.1} MiB) had arrived at the kill ({before_kill:.2?} into the \
         stream), {at_restart} at the restart {DOWN_FOR:?} later; the stream flowed \
         again (1 MiB more) {:.2?} after the restart ({:.2?} after the kill); the rest took {:.2?}",
        at_kill as f64 / MIB as f64,
        resumed - restarted,
        resumed - killed,
        done - resumed,
    );
    assert!(
        connect_status.success() && listen_status.success(),
        "connect exited with {connect_status}, listen with {listen_status}{}",
        logs.show()
    );
    assert_eq!(
        written.load(Ordering::Relaxed),
        TOTAL,
        "the sender's stdin was closed early{}",
        logs.show()
    );
    assert_eq!(
        got.first_mismatch,
        None,
        "the received stream differs from the sent one{}",
        logs.show()
    );
    assert_eq!(
        got.total,
        TOTAL,
        "the receiver got {} bytes instead of {TOTAL}{}",
        got.total,
        logs.show()
    );
    drop(server);
}
