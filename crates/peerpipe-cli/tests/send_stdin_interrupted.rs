//! `peerpipe send -` interrupted (SIGINT, as Ctrl-C sends) while it still
//! reads stdin, or while it waits for its receiver, exits at once and leaves
//! nothing in $TMPDIR; so does one whose receiver declines (an error on the
//! sender's side).

mod common;

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use common::{
    KillOnDrop, ServeProcess, TempDir, bin, in_pty, receive_command, run_in_pty, stderr_of,
    wait_bounded,
};

fn spawn_stdin_send(
    server: &ServeProcess,
    dir: &TempDir,
    tmp: &std::path::Path,
) -> (KillOnDrop, String) {
    let mut child = KillOnDrop(
        bin()
            .args(["send", "-", "--server", &server.url, "--identity"])
            .arg(dir.path("sender"))
            .env("TMPDIR", tmp)
            .env_remove("PEERPIPE_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&vec![5u8; 200_000]).unwrap();
    drop(stdin);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let code = lines.next().expect("a code line").unwrap();
    (child, code)
}

/// Sends SIGINT, as Ctrl-C on a terminal does.
fn interrupt(child: &std::process::Child) {
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn an_interrupted_or_failed_stdin_send_leaves_no_spool() {
    let dir = TempDir::new("send-stdin-int");
    let server = ServeProcess::start(&dir.0);
    let tmp = dir.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();

    // Interrupted while it still reads stdin (which stays open).
    let mut child = KillOnDrop(
        bin()
            .args(["send", "-", "--server", &server.url, "--identity"])
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
    stdin.write_all(&[1u8; 4096]).unwrap();
    for _ in 0..200 {
        if !entries(&tmp).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(entries(&tmp).len(), 1, "spooling");
    interrupt(&child);
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    let err = stderr_of(&mut child);
    assert!(!status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut printed).unwrap();
    assert!(printed.is_empty(), "no code: {printed}");
    assert!(
        entries(&tmp).is_empty(),
        "removed mid-read: {:?}",
        entries(&tmp)
    );
    drop(stdin);

    // Interrupted while waiting for a receiver.
    let (mut child, _code) = spawn_stdin_send(&server, &dir, &tmp);
    assert_eq!(entries(&tmp).len(), 1, "spooled while waiting");
    interrupt(&child);
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    let err = stderr_of(&mut child);
    assert!(!status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        entries(&tmp).is_empty(),
        "removed on Ctrl-C: {:?}",
        entries(&tmp)
    );

    // The receiver declines: the send fails, and cleans up all the same.
    let (mut child, code) = spawn_stdin_send(&server, &dir, &tmp);
    let receive = receive_command(&server, &dir.path("receiver"), &code, &dir.path("o"), &[]);
    let (declined, shown) = run_in_pty(in_pty(&receive), "n\n", Duration::from_secs(30));
    assert!(declined.is_some_and(|s| !s.success()), "{shown}");
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let err = stderr_of(&mut child);
    assert!(!status.success(), "{err}");
    assert!(err.contains("the receiver declined"), "{err}");
    assert!(
        entries(&tmp).is_empty(),
        "removed on error: {:?}",
        entries(&tmp)
    );
}
