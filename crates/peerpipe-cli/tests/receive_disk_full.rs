//! A full disk ends the transfer on both sides, saying why: `peerpipe receive`
//! into an 8 MiB tmpfs, 24 MiB sent, exits non-zero with "No space left on
//! device" said a few times (not once per retry), and the waiting
//! `peerpipe send` exits too.
//!
//! Needs root for the mount (in a mount namespace of its own, `unshare -m`):
//! ignored in the default suite; `.ci/run` runs it with the network-namespace tests.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    KillOnDrop, ServeProcess, TempDir, spawn_send, stderr_of, wait_bounded, wait_timeout,
};

#[test]
#[ignore = "needs root: mounts a small tmpfs in a mount namespace"]
fn a_full_disk_fails_both_sides_at_once() {
    let dir = TempDir::new("disk-full");
    let server = ServeProcess::start(&dir.0);
    let file = dir.path("big.bin");
    let data: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&file, &data).unwrap();
    let mut sender = spawn_send(&server, &dir.path("a"), &[&file]);
    let out = dir.path("small");
    fs::create_dir_all(&out).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=8m tmpfs '{out}' && exec '{bin}' receive '{code}' --server '{server}' --identity '{id}' -o '{out}'",
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
