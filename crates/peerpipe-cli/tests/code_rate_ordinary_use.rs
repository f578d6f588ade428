//! Ordinary use does not hit the code rate limit: ten transfers in a row from one
//! address (twenty code operations: each send allocates, each receive claims)
//! on a server with default limits.

mod common;

use std::time::Duration;

use common::{ServeProcess, TempDir, receive, same_bytes, spawn_send, wait_bounded};

#[test]
fn ten_transfers_in_a_row_pass_the_default_limits() {
    let dir = TempDir::new("code-rate");
    let server = ServeProcess::start(&dir.0);
    for i in 0..10 {
        let source = dir.path(&format!("note-{i}.txt"));
        std::fs::write(&source, format!("note {i}\n")).unwrap();
        let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);
        let out = dir.path(&format!("out-{i}"));
        let got = receive(&server, &dir.path("receiver"), &sender.code, &out, &[]);
        assert!(
            got.status.success(),
            "transfer {i}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert!(same_bytes(&source, &out.join(format!("note-{i}.txt"))));
        assert!(wait_bounded(&mut sender.child, Duration::from_secs(30)).success());
    }
}
