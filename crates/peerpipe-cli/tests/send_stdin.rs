//! `peerpipe send - --name NAME` reads stdin to its end and offers it as one
//! file; the receiver gets it byte for byte under that name, and the
//! sender's spool directory in $TMPDIR is gone when it exits.

mod common;

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use common::{KillOnDrop, ServeProcess, TempDir, bin, receive, same_bytes, wait_bounded};

#[test]
fn stdin_arrives_as_one_named_file_and_the_spool_goes() {
    let dir = TempDir::new("send-stdin");
    let server = ServeProcess::start(&dir.0);
    let source = dir.path("source.bin");
    common::files::write_input(&source, 1_000_003, 7).unwrap();
    let tmp = dir.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();

    let mut child = KillOnDrop(
        bin()
            .args(["send", "-", "--name", "dump.sql", "--server", &server.url])
            .arg("--identity")
            .arg(dir.path("sender"))
            .env("TMPDIR", &tmp)
            .env_remove("PEERPIPE_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&source).unwrap()).unwrap();
    drop(stdin);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let code = lines.next().expect("a code line").unwrap();
    let spooled: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert_eq!(spooled.len(), 1, "one spool directory while sending");

    let out = dir.path("inbox");
    let received = receive(&server, &dir.path("receiver"), &code, &out, &[]);
    let err = String::from_utf8_lossy(&received.stderr);
    assert!(received.status.success(), "{err}");
    assert!(err.contains("dump.sql (976.6 KiB)"), "{err}");
    assert!(same_bytes(&source, &out.join("dump.sql")));

    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let sender_err = common::stderr_of(&mut child);
    assert!(status.success(), "{sender_err}");
    assert!(lines.next().is_none(), "the code is the only stdout line");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "the spool is removed: {left:?}");
}
