//! `peerpipe completions SHELL` prints a completion script on stdout for
//! bash, zsh, fish, elvish and powershell; bash loads it and completes
//! `peerpipe`; an unknown shell is refused with the list.

mod common;

use common::bin;

#[test]
fn every_shell_gets_a_script_and_bash_loads_it() {
    let dir = common::TempDir::new("completions");
    for (shell, marker) in [
        ("bash", "complete -F _peerpipe"),
        ("zsh", "#compdef peerpipe"),
        ("fish", "complete -c peerpipe"),
        ("elvish", "edit:completion:arg-completer[peerpipe]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "{shell}: nothing on stderr");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        // The commands, new ones included, are offered.
        for command in ["send", "receive", "completions"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
        // And the new flags of send (fish names long flags `-l NAME`).
        for flag in ["text", "qr"] {
            assert!(
                script.contains(&format!("--{flag}")) || script.contains(&format!("-l {flag}")),
                "{shell} lacks --{flag}"
            );
        }
        std::fs::write(dir.path(shell), script).unwrap();
    }

    // bash reads the script and completes the subcommands and send's flags.
    let check = format!(
        "source '{}' && complete -p peerpipe && COMP_WORDS=(peerpipe re) COMP_CWORD=1 && _peerpipe peerpipe re peerpipe && echo \"${{COMPREPLY[@]}}\" && COMP_WORDS=(peerpipe send --rel) COMP_CWORD=2 && _peerpipe peerpipe --rel send && echo \"${{COMPREPLY[@]}}\"",
        dir.path("bash").display()
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", &check])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("-F _peerpipe peerpipe"), "{shown}");
    assert!(
        shown.lines().any(|l| l.split(' ').any(|w| w == "receive")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.split(' ').any(|w| w == "--relay-only")),
        "{shown}"
    );

    let bad = bin().args(["completions", "tcsh"]).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(err.contains("bash") && err.contains("powershell"), "{err}");
}
