//! `peerpipe receive CODE -o -` from a sender whose file rotted after it was
//! hashed (a byte flipped at 3 MiB + 777): stdout gets exactly the verified
//! 3 MiB before the bad piece and not one byte of it; the receiver says the
//! data failed verification, and the sender hears that too.

mod common;

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::FileExt as _;
use std::time::{Duration, Instant};

use common::{ServeProcess, TempDir, receive_command, spawn_send, wait_bounded};

const MIB: u64 = 1024 * 1024;

#[test]
fn rotten_data_never_reaches_stdout() {
    let dir = TempDir::new("recv-stdout-corrupt");
    let server = ServeProcess::start(&dir.0);
    let source = dir.path("disk.img");
    common::files::write_input(&source, 6 * MIB + 99, 21).unwrap();
    let original = std::fs::read(&source).unwrap();
    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);

    // Once the sender has hashed the file, it rots.
    let stderr = sender.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("in all") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the sender hashed its file");
    let bad = 3 * MIB + 777;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&source)
        .unwrap();
    file.write_all_at(&[original[bad as usize] ^ 0x5a], bad)
        .unwrap();
    drop(file);

    let started = Instant::now();
    let received = receive_command(
        &server,
        &dir.path("receiver"),
        &sender.code,
        std::path::Path::new("-"),
        &[],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&received.stderr);
    assert!(!received.status.success(), "{err}");
    assert!(err.contains("failed verification"), "{err}");
    assert_eq!(
        received.stdout.len() as u64,
        3 * MIB,
        "the verified part before the bad piece: {err}"
    );
    assert!(received.stdout == original[..3 * MIB as usize]);
    assert!(started.elapsed() < Duration::from_secs(30));

    let status = wait_bounded(&mut sender.child, Duration::from_secs(30));
    let sender_err = reader.join().unwrap();
    assert!(!status.success(), "{sender_err}");
    assert!(sender_err.contains("failed verification"), "{sender_err}");
}
