//! The config file holds a token: `peerpipe config set` writes it mode 0600
//! (its new directory 0700), also over a file that was readable by others,
//! and a client command warns about a token file others may read.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use common::TempDir;

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_config_file_is_mode_0600() {
    let dir = TempDir::new("config-mode");
    let file = dir.path("new/config.toml");
    let set = |value: &str| {
        let out = common::bin()
            .args(["config", "set", "token", value])
            .env("PEERPIPE_CONFIG", &file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set("secret-1");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir.path("new")), 0o700);

    // Widened by hand: a client command says so...
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let out = common::bin()
        .args(["peers", "--server", "127.0.0.1:1", "--timeout", "1s"])
        .env("PEERPIPE_CONFIG", &file)
        .env_remove("PEERPIPE_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("others may read it") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    // ...and the next write puts it back to 0600, leaving no temporary file.
    set("secret-2");
    assert_eq!(mode(&file), 0o600);
    let names: Vec<_> = fs::read_dir(dir.path("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config.toml"], "only the config file is left");
    assert!(fs::read_to_string(&file).unwrap().contains("\"secret-2\""));
}
