//! `peerpipe connect/listen --stun/--turn`: malformed servers are refused before
//! anything connects, with the expected form in the message.

mod common;

use common::bin;

#[test]
fn malformed_ice_servers_are_refused_by_the_client() {
    for (command, flag, value, hint) in [
        (
            "connect",
            "--turn",
            "turn.example.org:3478",
            "URL,USER,PASSWORD",
        ),
        ("listen", "--turn", "turn:h:3478,user", "URL,USER,PASSWORD"),
        ("connect", "--turn", "turn:h,u,p", "HOST:PORT"),
        ("listen", "--stun", "stun:h:0", "HOST:PORT"),
    ] {
        let mut args = vec![command, flag, value];
        if command == "connect" {
            args.push("ABCDEF");
        }
        let out = bin()
            .args(&args)
            .args(["--server", "127.0.0.1:9", "--token", "t"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(hint), "{args:?}: {stderr}");
    }
}
