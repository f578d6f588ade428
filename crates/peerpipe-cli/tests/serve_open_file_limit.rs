//! The server at its open-file limit (issue 19, finding 3): `peerpipe serve`
//! in a process that may hold only 100 files keeps its connections below that
//! limit, refuses new ones with HTTP 503 and a log line, answers `/health`
//! all the while, and admits again once connections close.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{KillOnDrop, TempDir};

/// The first line of the answer to `request` on a new connection.
fn status_line(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().unwrap_or("no answer").to_owned()
}

#[test]
fn at_the_open_file_limit_new_connections_get_503_and_health_answers() {
    let dir = TempDir::new("fd-limit");
    // A shell lowers the limit, then becomes the server.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 100 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_peerpipe"))
        .args(["serve", "--listen", "127.0.0.1:0", "--secret-file"])
        .arg(dir.path("secret"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stderr = child.stderr.take().expect("stderr");
    let server = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server reports its address");
        log.push_str(&line);
        log.push('\n');
        if let Some(rest) = line.split("listening on ws://").nth(1) {
            break rest.split('/').next().unwrap_or_default().to_owned();
        }
    };
    // Hold far more connections than the process could open files.
    let mut held = Vec::new();
    for _ in 0..150 {
        held.push(TcpStream::connect(&addr).expect("the kernel still accepts"));
    }
    let signal = "GET /v1/signal HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let health = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert!(
        status_line(&addr, signal).starts_with("HTTP/1.1 503"),
        "a new connection is refused cleanly"
    );
    assert!(
        status_line(&addr, health).starts_with("HTTP/1.1 200"),
        "/health answers at the limit"
    );
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(
        log.contains("at the connection limit"),
        "a log line says so: {log}"
    );
    assert!(log.contains("connection limit lowered"), "{log}");
    held.clear();
    // Places come back as the sockets close.
    let mut back = false;
    for _ in 0..100 {
        // Not an upgrade: 400 from the router, no longer 503.
        let line = status_line(&addr, signal);
        if !line.starts_with("HTTP/1.1 503") {
            assert!(line.starts_with("HTTP/1.1 4"), "{line}");
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(back, "the server admits again once connections closed");
    drop(server);
}
