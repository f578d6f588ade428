//! `peerpipe get` into a filesystem with less free space than the ticket's
//! files refuses before anything is written, with "needs X, Y free on PATH".
//!
//! Needs root for the mount (an 8 MiB tmpfs in a mount namespace of its own,
//! `unshare -m`): ignored in the default suite, like `receive_disk_full`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KillOnDrop, ServeProcess, TempDir, client, spawn_share, stderr_of, wait_bounded};

#[test]
#[ignore = "needs root: mounts a small tmpfs in a mount namespace"]
fn a_ticket_larger_than_the_free_space_is_refused_first() {
    let dir = TempDir::new("get-no-space");
    let server = ServeProcess::start(&dir.0);
    let token = server.token("me");
    let file = dir.path("big.bin");
    common::files::write_input(&file, 20 << 20, 4).unwrap();
    let (_seed, ticket) = spawn_share(client(
        "share",
        &[file.to_str().unwrap()],
        &server,
        &token,
        &dir.path("seed"),
    ));
    let out = dir.path("small");
    std::fs::create_dir_all(&out).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=8m tmpfs '{out}' && '{bin}' get '{ticket}' --server '{server}' --token '{token}' --identity '{id}' -o '{out}'; status=$?; ls -A '{out}'; exit $status",
        out = out.display(),
        bin = env!("CARGO_BIN_EXE_peerpipe"),
        server = server.url,
        id = dir.path("getter").display(),
    );
    let mut getter = KillOnDrop(
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = wait_bounded(&mut getter, Duration::from_secs(60));
    let err = stderr_of(&mut getter);
    let mut left = String::new();
    std::io::Read::read_to_string(&mut getter.stdout.take().unwrap(), &mut left).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "not enough free space: needs 20.0 MiB, 8.0 MiB free on {}",
            out.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("No space left"),
        "found before writing: {err}"
    );
    assert!(left.trim().is_empty(), "nothing written: {left}");
}
