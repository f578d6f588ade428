//! `peerpipe serve --stun/--turn`: malformed servers are refused before the server
//! starts, with the expected form in the message.

mod common;

use common::{TempDir, bin};

#[test]
fn malformed_ice_servers_are_refused_at_start() {
    let dir = TempDir::new("serve-ice");
    for (flag, value, hint) in [
        ("--turn", "turn.example.org:3478", "URL,USER,PASSWORD"),
        ("--turn", "http://h:1,u,p", "HOST:PORT"),
        ("--stun", "stun.example.org", "HOST:PORT"),
        ("--stun", "stun:h:99999", "HOST:PORT"),
    ] {
        let out = bin()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                flag,
                value,
                "--secret-file",
            ])
            .arg(dir.path("secret"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(stderr.contains(hint), "{flag} {value}: {stderr}");
    }
}
