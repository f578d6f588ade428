//! `peerpipe token` prints one token on stdout and refuses a missing secret file.

mod common;

use common::{TempDir, bin, run_ok};

#[test]
fn token_needs_an_existing_secret_file() {
    let dir = TempDir::new("token");
    let out = bin()
        .args(["token", "--user", "u", "--secret-file"])
        .arg(dir.path("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn token_verifies_with_the_secret_and_carries_the_user() {
    let dir = TempDir::new("token-ok");
    let secret = dir.path("secret");
    std::fs::write(&secret, format!("{}\n", "ab".repeat(32))).unwrap();
    let stdout = run_ok(
        bin()
            .args(["token", "--user", "carol", "--ttl", "1h", "--secret-file"])
            .arg(&secret),
    );
    assert_eq!(stdout.lines().count(), 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = peerpipe_proto::token::verify(&[0xab; 32], stdout.trim(), now).unwrap();
    assert_eq!(claims.user, "carol");
    assert!(claims.expires_at > now + 3500 && claims.expires_at <= now + 3600);
}
