//! Overwrites are never silent: `peerpipe receive` refuses a target that exists
//! with other contents (same size or not) and leaves it alone, replaces it with
//! `--force`, and takes an identical existing file as already received.

mod common;

use std::fs;
use std::io::Read as _;
use std::time::Duration;

use common::{ServeProcess, TempDir, receive, spawn_send, wait_timeout};

/// Sends `file` and receives it into `out` with `extra` flags; the receiver's
/// output and whether the sender succeeded.
fn transfer(
    server: &ServeProcess,
    dir: &TempDir,
    file: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> (std::process::Output, bool) {
    let mut sender = spawn_send(server, &dir.path("a"), &[file]);
    let received = receive(server, &dir.path("b"), &sender.code, out, extra);
    let Some(status) = wait_timeout(&mut sender.child, Duration::from_secs(30)) else {
        let mut stderr = String::new();
        let _ = sender
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr);
        panic!(
            "the sender did not finish within 30 s; its stderr: {stderr}\nthe receiver's: {}",
            String::from_utf8_lossy(&received.stderr)
        );
    };
    (received, status.success())
}

#[test]
fn existing_files_are_replaced_only_with_force() {
    let dir = TempDir::new("overwrite");
    // Four codes from one address: more than the default burst for anonymous devices.
    let server = ServeProcess::start_with(&dir.0, &["--code-burst-per-ip", "20"]);
    let file = dir.path("f.txt");
    fs::write(&file, b"the new contents, 32 bytes long!").unwrap();
    let out = dir.path("out");
    fs::create_dir_all(&out).unwrap();
    let target = out.join("f.txt");

    for old in [&b"other contents of the same size.."[..32], b"short"] {
        fs::write(&target, old).unwrap();
        let (received, sent) = transfer(&server, &dir, &file, &out, &[]);
        let stderr = String::from_utf8_lossy(&received.stderr);
        assert!(
            !received.status.success(),
            "a different file was overwritten"
        );
        assert!(
            stderr.contains("exists and differs") && stderr.contains("--force"),
            "{stderr}"
        );
        assert!(
            !sent,
            "the sender reports that the receiver did not take the files"
        );
        assert_eq!(
            fs::read(&target).unwrap(),
            old,
            "the existing file is untouched"
        );
    }

    let (received, sent) = transfer(&server, &dir, &file, &out, &["--force"]);
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert!(sent);
    assert_eq!(fs::read(&target).unwrap(), fs::read(&file).unwrap());

    let (received, sent) = transfer(&server, &dir, &file, &out, &["--json"]);
    assert!(
        received.status.success(),
        "an identical file is no conflict"
    );
    assert!(sent);
    let done: serde_json::Value = String::from_utf8_lossy(&received.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["event"] == "done")
        .expect("a done line");
    assert_eq!(
        done["missing_groups"], 0,
        "nothing fetched for an identical file"
    );
}
