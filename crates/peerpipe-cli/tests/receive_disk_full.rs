//! A disk that fills up during a transfer ends it on both sides, saying why:
//! `peerpipe receive` into a 32 MiB tmpfs, 24 MiB sent (it fits, so the
//! free-space check lets it start), the tmpfs filled by another writer once
//! the first data is there; the receiver exits non-zero with "No space left
//! on device" said a few times (not once per retry), and the waiting `peerpipe
//! send` exits too. The sender goes through a rate-capped relay, so that the
//! transfer is still running when the disk fills.
//!
//! Needs root for the mount (in a mount namespace of its own, `unshare -m`):
//! ignored in the default suite; `.ci/run` runs it with the network-namespace tests.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    KillOnDrop, ServeProcess, TempDir, spawn_send_with, stderr_of, wait_bounded, wait_timeout,
};

#[test]
#[ignore = "needs root: mounts a small tmpfs in a mount namespace"]
fn a_full_disk_fails_both_sides_at_once() {
    let dir = TempDir::new("disk-full");
    // 200 relayed frames a second: several seconds for 24 MiB.
    let server = ServeProcess::start_with(&dir.0, &["--relay-rate", "200"]);
    let file = dir.path("big.bin");
    let data: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&file, &data).unwrap();
    let mut sender = spawn_send_with(&server, &dir.path("a"), &[&file], &["--relay-only"]);
    let out = dir.path("small");
    fs::create_dir_all(&out).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=32m tmpfs '{out}' || exit 9
        '{bin}' receive '{code}' --server '{server}' --identity '{id}' -o '{out}' &
        receiver=$!
        i=0
        while [ $i -lt 400 ] && [ -z \"$(find '{out}' -path '*.partial/*' -size +0 2>/dev/null)\" ]; do
            sleep 0.05; i=$((i+1))
        done
        head -c 32m /dev/zero > '{out}/filler' 2>/dev/null
        wait $receiver",
        out = out.display(),
        bin = env!("CARGO_BIN_EXE_peerpipe"),
        code = sender.code,
        server = server.url,
        id = dir.path("b").display(),
    );
    let started = Instant::now();
    let mut receiver = KillOnDrop(
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .env_remove("PEERPIPE_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = wait_timeout(&mut receiver, Duration::from_secs(60));
    let took = started.elapsed();
    let _ = receiver.kill();
    let stderr = stderr_of(&mut receiver);
    let status = status.unwrap_or_else(|| panic!("the receiver hung on a full disk: {stderr}"));
    assert!(!status.success(), "the receiver failed: {stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "receiver: {stderr}"
    );
    assert!(
        stderr.matches("No space left").count() <= 3,
        "said once, not per retry: {stderr}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the receiver gave up in {took:?}"
    );
    let status = wait_bounded(&mut sender.child, Duration::from_secs(30));
    let sender_err = stderr_of(&mut sender.child);
    assert!(!status.success(), "the sender gave up too: {sender_err}");
}
