//! `peerpipe serve` whose stderr reader goes away (a log pipe closed by a
//! supervisor) keeps serving: devices still get in, and it still stops cleanly
//! on SIGTERM. It used to panic on its next log line.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{TempDir, bin, run_ok, wait_bounded};

#[test]
fn a_server_whose_stderr_closes_keeps_serving() {
    let dir = TempDir::new("closed-stderr");
    let secret = dir.path("secret");
    let mut serve = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--secret-file"])
        .arg(&secret)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = serve.stderr.take().unwrap();
    let mut url = None;
    for line in BufReader::new(stderr).lines().take(20) {
        if let Some(rest) = line.unwrap().split("listening on ").nth(1) {
            url = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    // The reader (and with it the pipe) is gone from here on.
    let url = url.expect("the server never said where it listens");
    let token = run_ok(
        bin()
            .args(["token", "--user", "alice", "--secret-file"])
            .arg(&secret),
    );
    for _ in 0..2 {
        // Each admission makes the server log a line to the closed pipe.
        run_ok(
            bin()
                .args([
                    "peers",
                    "--server",
                    &url,
                    "--token",
                    token.trim(),
                    "--identity",
                ])
                .arg(dir.path("a.key")),
        );
    }
    assert!(serve.try_wait().unwrap().is_none(), "the server died");
    let pid = serve.id().to_string();
    run_ok(std::process::Command::new("kill").args(["-TERM", &pid]));
    let status = wait_bounded(&mut serve, Duration::from_secs(10));
    assert!(status.success(), "{status}");
}
