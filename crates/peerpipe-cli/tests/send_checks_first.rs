//! What would make a send fail is found before a code is handed out: two files
//! that would arrive under one name, a path that does not exist. No code on
//! stdout, one clear sentence (no reason printed twice), exit non-zero.

mod common;

use common::{ServeProcess, TempDir, bin};

fn send(server: &ServeProcess, paths: &[&std::path::Path]) -> std::process::Output {
    bin()
        .arg("send")
        .args(paths)
        .args(["--server", &server.url])
        .env_remove("PEERPIPE_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn duplicate_names_and_missing_paths_fail_before_the_code() {
    let dir = TempDir::new("send-checks");
    let server = ServeProcess::start(&dir.0);
    let (a, b) = (dir.path("a"), dir.path("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("x.txt"), b"one").unwrap();
    std::fs::write(b.join("x.txt"), b"two").unwrap();

    let dup = send(&server, &[&a.join("x.txt"), &b.join("x.txt")]);
    assert!(!dup.status.success());
    assert!(dup.stdout.is_empty(), "a code was printed");
    let err = String::from_utf8_lossy(&dup.stderr);
    assert!(err.contains("would both arrive as x.txt"), "{err}");

    let missing = send(&server, &[&dir.path("nothing-here")]);
    assert!(!missing.status.success());
    assert!(missing.stdout.is_empty(), "a code was printed");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("nothing-here"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
