//! A multi-GiB sparse file (holes with islands of data, an odd size) through
//! `peerpipe send` / `peerpipe receive` arrives byte-identical; the receiver,
//! arriving while the sender still hashes, waits for the names. Release build,
//! own `.ci/run` step: `cargo test --release -p peerpipe-cli --test
//! send_receive_sparse -- --ignored`.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::time::{Duration, Instant};

use common::{ServeProcess, TempDir, receive, same_bytes, spawn_send, wait_bounded};

const GIB: u64 = 1024 * 1024 * 1024;

#[test]
#[ignore = "3 GiB on disk twice; release build, own CI step"]
fn a_sparse_multi_gib_file_arrives_identical() {
    let dir = TempDir::new("sparse");
    let server = ServeProcess::start(&dir.0);
    let file = dir.path("sparse.img");
    let size = 3 * GIB + 777;
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    f.set_len(size).unwrap();
    for (i, at) in [0, GIB + 5, 2 * GIB - 3, size - 100]
        .into_iter()
        .enumerate()
    {
        let island: Vec<u8> = (0..100u32)
            .map(|j| (j as u8).wrapping_mul(31) ^ i as u8)
            .collect();
        f.write_all_at(&island, at).unwrap();
    }
    drop(f);

    let started = Instant::now();
    let mut sender = spawn_send(&server, &dir.path("a"), &[&file]);
    let code = sender.code.clone();
    let out = dir.path("out");
    let received = receive(&server, &dir.path("b"), &code, &out, &["--json"]);
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert!(wait_bounded(&mut sender.child, Duration::from_secs(60)).success());
    // The code comes before hashing 3 GiB ends, so the receiver arrives early
    // and is told to wait for the names.
    let events = String::from_utf8_lossy(&received.stdout);
    assert!(
        events
            .lines()
            .any(|l| l.contains(r#""event":"sender_hashing""#)),
        "{events}"
    );
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{size} bytes in {secs:.1} s ({:.0} MB/s)",
        size as f64 / secs / 1e6
    );
    let got = out.join("sparse.img");
    assert_eq!(File::open(&got).unwrap().metadata().unwrap().len(), size);
    assert!(same_bytes(&file, &got), "the received file differs");
}
