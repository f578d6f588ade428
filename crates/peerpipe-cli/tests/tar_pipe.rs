//! `tar c DIR | peerpipe connect ID` and `peerpipe listen | tar x` move a directory
//! tree intact, through a real `peerpipe serve`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ServeProcess, TempDir, device_id, wait_bounded, wait_online};
use rand::RngCore as _;

fn make_tree(root: &Path) {
    let mut rng = rand::thread_rng();
    for (i, rel) in [
        "a.bin",
        "empty",
        "sub/b.bin",
        "sub/deeper/c.txt",
        "sub/deeper/d.bin",
    ]
    .iter()
    .enumerate()
    {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut data = vec![
            0u8;
            if *rel == "empty" {
                0
            } else {
                100_000 * (i + 1) + 7
            }
        ];
        rng.fill_bytes(&mut data);
        std::fs::write(path, data).unwrap();
    }
}

fn assert_same_tree(a: &Path, b: &Path) {
    for entry in std::fs::read_dir(a).unwrap() {
        let entry = entry.unwrap();
        let other = b.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            assert_same_tree(&entry.path(), &other);
        } else {
            let (x, y) = (
                std::fs::read(entry.path()).unwrap(),
                std::fs::read(&other).unwrap(),
            );
            assert!(x == y, "{} differs", other.display());
        }
    }
}

#[test]
fn a_directory_tree_survives_tar_through_peerpipe() {
    let dir = TempDir::new("tar");
    let server = ServeProcess::start(&dir.0);
    let token = server.token("dana");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let (src, dst) = (dir.path("src"), dir.path("dst"));
    make_tree(&src);
    std::fs::create_dir_all(&dst).unwrap();
    let exe = env!("CARGO_BIN_EXE_peerpipe");

    let mut listen = Command::new("sh")
        .arg("-c")
        .arg(r#""$PP" listen -q --identity "$KEY" | tar x -C "$DST""#)
        .env("PP", exe)
        .env("KEY", &b)
        .env("DST", &dst)
        .env("PEERPIPE_SERVER", &server.url)
        .env("PEERPIPE_TOKEN", &token)
        .spawn()
        .unwrap();
    let listener_id = device_id(&b);
    wait_online(&server, &token, &a, &listener_id);

    let mut connect = Command::new("sh")
        .arg("-c")
        .arg(r#"tar c -C "$SRC" . | "$PP" connect -q "$PEER" --identity "$KEY""#)
        .env("PP", exe)
        .env("KEY", &a)
        .env("SRC", &src)
        .env("PEER", &listener_id)
        .env("PEERPIPE_SERVER", &server.url)
        .env("PEERPIPE_TOKEN", &token)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_bounded(&mut connect, Duration::from_secs(60)).success());
    assert!(wait_bounded(&mut listen, Duration::from_secs(60)).success());
    assert_same_tree(&src, &dst);
    assert_eq!(std::fs::metadata(dst.join("empty")).unwrap().len(), 0);
}
