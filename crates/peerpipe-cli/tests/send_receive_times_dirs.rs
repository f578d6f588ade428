//! `send`/`receive` keep what a tree is beyond its bytes: each file's
//! modification time (whole seconds) and the directories that hold no file,
//! nested ones and a tree of nothing else included. A file already in place
//! with the same contents keeps its own time.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use common::{ServeProcess, TempDir, receive, spawn_send, wait_bounded};

fn set_mtime(path: &Path, secs: u64) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

fn mtime(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn send_and_receive(server: &ServeProcess, dir: &TempDir, what: &Path, out: &Path, tag: &str) {
    let mut sender = spawn_send(server, &dir.path(&format!("{tag}-s")), &[what]);
    let received = receive(
        server,
        &dir.path(&format!("{tag}-r")),
        &sender.code,
        out,
        &["--yes"],
    );
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    let status = wait_bounded(&mut sender.child, Duration::from_secs(30));
    assert!(status.success(), "{}", common::stderr_of(&mut sender.child));
}

#[test]
fn modification_times_and_empty_directories_arrive() {
    let dir = TempDir::new("times-dirs");
    let server = ServeProcess::start(&dir.0);
    let tree = dir.path("tree");
    fs::create_dir_all(tree.join("empty")).unwrap();
    fs::create_dir_all(tree.join("deep/er/still")).unwrap();
    fs::create_dir_all(tree.join("docs")).unwrap();
    fs::write(tree.join("docs/old.txt"), b"from 2001\n").unwrap();
    fs::write(tree.join("new.txt"), b"from 2024\n").unwrap();
    set_mtime(&tree.join("docs/old.txt"), 1_000_000_000);
    set_mtime(&tree.join("new.txt"), 1_700_000_000);

    let out = dir.path("inbox");
    // One of the files is in place already, with the same contents and a time
    // of its own: it is kept as it is.
    fs::create_dir_all(out.join("tree")).unwrap();
    fs::write(out.join("tree/new.txt"), b"from 2024\n").unwrap();
    set_mtime(&out.join("tree/new.txt"), 1_600_000_000);
    send_and_receive(&server, &dir, &tree, &out, "tree");

    let got = out.join("tree");
    assert_eq!(fs::read(got.join("docs/old.txt")).unwrap(), b"from 2001\n");
    assert_eq!(mtime(&got.join("docs/old.txt")), 1_000_000_000);
    assert_eq!(
        mtime(&got.join("new.txt")),
        1_600_000_000,
        "a file in place keeps its time"
    );
    for empty in ["empty", "deep/er/still"] {
        let d = got.join(empty);
        assert!(d.is_dir(), "{empty} arrived");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0, "{empty} is empty");
    }

    // A directory of nothing but an empty one.
    let bare = dir.path("bare");
    fs::create_dir_all(bare.join("nothing")).unwrap();
    let out = dir.path("inbox2");
    send_and_receive(&server, &dir, &bare, &out, "bare");
    assert!(out.join("bare/nothing").is_dir());
}
