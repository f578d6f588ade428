//! `peerpipe send` a directory tree and a file to an anonymous `peerpipe
//! receive` through a real server: the code on stdout, every file byte-identical
//! (empty, one byte, odd-sized, exactly two groups, a duplicate), modes kept.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use common::{ServeProcess, TempDir, receive, spawn_send, wait_bounded};

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_tree_and_a_file_arrive_identical() {
    let dir = TempDir::new("send-receive");
    let server = ServeProcess::start(&dir.0);
    let tree = dir.path("tree");
    fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    let odd = pseudo_random(1024 * 1024 + 12_345, 1);
    fs::write(tree.join("empty"), b"").unwrap();
    fs::write(tree.join("one"), b"x").unwrap();
    fs::write(tree.join("odd.bin"), &odd).unwrap();
    fs::write(tree.join("sub/copy.bin"), &odd).unwrap();
    fs::write(
        tree.join("sub/deeper/exact.bin"),
        pseudo_random(32 * 1024, 2),
    )
    .unwrap();
    fs::write(tree.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(tree.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let single = dir.path("single.bin");
    fs::write(&single, pseudo_random(100_000, 3)).unwrap();

    let mut sender = spawn_send(&server, &dir.path("a"), &[&tree, &single]);
    let code = sender.code.clone();
    assert!(
        code.split('-').count() == 3 && code.split('-').next().unwrap().parse::<u32>().is_ok(),
        "the code line is N-word-word: {code:?}"
    );
    let out = dir.path("out");
    let receiver = receive(&server, &dir.path("b"), &code, &out, &[]);
    assert!(
        receiver.status.success(),
        "receive failed: {}",
        String::from_utf8_lossy(&receiver.stderr)
    );
    let status = wait_bounded(&mut sender.child, Duration::from_secs(30));
    assert!(status.success(), "send failed");
    // A good transfer warns about nothing on either side.
    let receiver_log = String::from_utf8_lossy(&receiver.stderr);
    assert!(!receiver_log.contains("WARN"), "{receiver_log}");
    let sender_log = common::stderr_of(&mut sender.child);
    assert!(!sender_log.contains("WARN"), "{sender_log}");
    assert!(
        sender.rest.next().is_none(),
        "the code is the only line on stdout"
    );

    for rel in [
        "empty",
        "one",
        "odd.bin",
        "sub/copy.bin",
        "sub/deeper/exact.bin",
        "run.sh",
    ] {
        assert_eq!(
            fs::read(out.join("tree").join(rel)).unwrap(),
            fs::read(tree.join(rel)).unwrap(),
            "{rel}"
        );
    }
    assert_eq!(
        fs::read(out.join("single.bin")).unwrap(),
        fs::read(&single).unwrap()
    );
    let mode = fs::metadata(out.join("tree/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let leftovers: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".peerpipe"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial data left behind: {leftovers:?}"
    );
}
