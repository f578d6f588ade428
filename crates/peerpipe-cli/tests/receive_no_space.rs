//! `peerpipe receive` into a filesystem with less free space than the offer
//! refuses before anything is fetched or written, with "needs X, Y free on
//! PATH"; the sender hears only that the receiver ended the transfer, none of
//! the receiver's paths.
//!
//! Needs root for the mount (an 8 MiB tmpfs in a mount namespace of its own,
//! `unshare -m`): ignored in the default suite, like `receive_disk_full`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KillOnDrop, ServeProcess, TempDir, spawn_send, stderr_of, wait_bounded};

#[test]
#[ignore = "needs root: mounts a small tmpfs in a mount namespace"]
fn an_offer_larger_than_the_free_space_is_refused_first() {
    let dir = TempDir::new("no-space");
    let server = ServeProcess::start(&dir.0);
    let file = dir.path("big.bin");
    common::files::write_input(&file, 24 << 20, 3).unwrap();
    let mut sender = spawn_send(&server, &dir.path("a"), &[&file]);
    let out = dir.path("private-small");
    std::fs::create_dir_all(&out).unwrap();
    // After the receive, what it left in the tmpfs (which goes with the
    // namespace) is listed on stdout.
    let script = format!(
        "mount -t tmpfs -o size=8m tmpfs '{out}' && '{bin}' receive '{code}' --server '{server}' --identity '{id}' -o '{out}'; status=$?; ls -A '{out}'; exit $status",
        out = out.display(),
        bin = env!("CARGO_BIN_EXE_peerpipe"),
        code = sender.code,
        server = server.url,
        id = dir.path("b").display(),
    );
    let mut receiver = KillOnDrop(
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .env_remove("PEERPIPE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = wait_bounded(&mut receiver, Duration::from_secs(60));
    let err = stderr_of(&mut receiver);
    let mut left = String::new();
    std::io::Read::read_to_string(&mut receiver.stdout.take().unwrap(), &mut left).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "not enough free space: needs 24.0 MiB, 8.0 MiB free on {}",
            out.display()
        )),
        "{err}"
    );
    assert!(err.contains("nothing was fetched"), "{err}");
    assert!(err.contains("write elsewhere (-o DIR)"), "{err}");
    assert!(err.contains("the sender needs to send again"), "{err}");
    assert!(
        !err.contains("No space left"),
        "found before writing: {err}"
    );
    assert!(
        !err.contains("ask the sender for a new code"),
        "not a resume: {err}"
    );
    assert!(left.trim().is_empty(), "nothing written: {left}");

    let sent = wait_bounded(&mut sender.child, Duration::from_secs(30));
    let sender_err = stderr_of(&mut sender.child);
    assert!(!sent.success(), "{sender_err}");
    assert!(
        sender_err.contains("the receiver ended the transfer"),
        "{sender_err}"
    );
    assert!(
        !sender_err.contains("private-small") && !sender_err.contains("free"),
        "the receiver's paths stay its own: {sender_err}"
    );
}
