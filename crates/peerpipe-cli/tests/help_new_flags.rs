//! The `--help` of `send`, `receive` and `completions` teaches the new flags
//! with examples: --text, `-` and --name, --qr, -o -, the code prompt, the
//! free-space check, the shells.

mod common;

use common::run_ok;

fn help(args: &[&str]) -> String {
    run_ok(common::bin().args(args).arg("--help"))
}

#[test]
fn help_shows_the_new_flags_with_examples() {
    let send = help(&["send"]);
    for needle in [
        "--text <TEXT>",
        "at most 64 KiB",
        "`-` alone reads standard input",
        "--name <NAME>",
        "--qr",
        "Examples:",
        "peerpipe send --text",
        "| peerpipe send - --name shop.sql",
    ] {
        assert!(
            send.contains(needle),
            "send --help lacks {needle:?}:\n{send}"
        );
    }
    let receive = help(&["receive"]);
    for needle in [
        "[CODE]",
        "asks for it when stdin is a terminal",
        "`-` writes the one file offered to standard output",
        "free space",
        "Examples:",
        "-o - > dump.sql",
    ] {
        assert!(
            receive.contains(needle),
            "receive --help lacks {needle:?}:\n{receive}"
        );
    }
    let completions = help(&["completions"]);
    for needle in ["bash", "zsh", "fish", "elvish", "powershell", "Install"] {
        assert!(
            completions.contains(needle),
            "completions --help lacks {needle:?}:\n{completions}"
        );
    }
}
