//! A malformed config file is a clear error naming the file and the line, for
//! `peerpipe config` and for the client commands that read it; `config path`
//! and a client command's `--help` still work, `serve`-side commands never
//! read it.

mod common;

use std::path::Path;
use std::process::Output;

use common::TempDir;

fn run(file: &Path, args: &[&str]) -> Output {
    common::bin()
        .args(args)
        .env("PEERPIPE_CONFIG", file)
        .env_remove("PEERPIPE_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn a_malformed_file_names_its_line() {
    let dir = TempDir::new("config-malformed");
    let file = dir.path("config.toml");
    let cases = [
        ("# mine\nserver = wss://unquoted\n", 2, "quoted string"),
        ("server = \"a\"\n\nserver = \"b\"\n", 3, "set twice"),
        ("token = \"t\"\nsever = \"x\"\n", 2, "unknown key \"sever\""),
        ("[peerpipe]\nserver = \"a\"\n", 1, "tables"),
        ("server = \"open\n", 1, "closing"),
    ];
    for (text, line, what) in cases {
        std::fs::write(&file, text).unwrap();
        let at = format!("{}:{line}:", file.display());
        for args in [
            &["config", "list"][..],
            &["config", "set", "server", "h:1"],
            &["peers", "--server", "127.0.0.1:1", "--token", "t"],
            &["send", "--text", "hi", "--server", "127.0.0.1:1"],
            &["receive", "1-a-b", "--server", "127.0.0.1:1"],
        ] {
            let out = run(&file, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} on {text:?} must fail");
            assert!(
                stderr.contains(&at) && stderr.contains(what),
                "{args:?} on {text:?}: want {at} and {what:?}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "nothing on stdout: {args:?}");
        }
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "left as it was"
        );
    }
    // A token-requiring command without a token still names the file first.
    std::fs::write(&file, "token = oops\n").unwrap();
    let out = run(&file, &["peers"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}:1:", file.display())));

    // Still fine: config path, --help, commands that do not read the config.
    let path = run(&file, &["config", "path"]);
    assert!(path.status.success());
    assert_eq!(
        String::from_utf8_lossy(&path.stdout),
        format!("{}\n", file.display())
    );
    assert!(run(&file, &["send", "--help"]).status.success());
    assert!(run(&file, &["completions", "bash"]).status.success());
    assert!(
        run(
            &file,
            &["id", "--identity", dir.path("id").to_str().unwrap()]
        )
        .status
        .success()
    );

    // Not UTF-8.
    std::fs::write(&file, b"server = \"\xff\"\n").unwrap();
    let out = run(&file, &["config", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
}
