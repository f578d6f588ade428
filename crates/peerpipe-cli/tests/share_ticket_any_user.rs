//! A `share` ticket works for anyone: a device of another user and an
//! anonymous device fetch the files through the sharing device's door; the
//! same device sharing the same files gives the same ticket again; a damaged
//! ticket and a stopped share fail with a clear sentence, at once.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    KillOnDrop, ServeProcess, TempDir, bin, client, same_bytes, spawn_share, wait_bounded,
};

const BOUND: Duration = Duration::from_secs(60);

/// Starts `share PATH` for `token`'s user; returns it and its ticket.
fn share(server: &ServeProcess, token: &str, dir: &TempDir, path: &Path) -> (KillOnDrop, String) {
    spawn_share(client(
        "share",
        &[path.to_str().unwrap()],
        server,
        token,
        &dir.path("sharer-identity"),
    ))
}

/// `get TICKET -o OUT` on the test's server, with `token` or anonymously.
fn get(server: &ServeProcess, token: Option<&str>, ticket: &str, out: &Path) -> Command {
    let mut command = bin();
    command
        .args(["get", ticket, "-o"])
        .arg(out)
        .args(["--server", &server.url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    command
}

/// Runs `command` within the bound; its exit success and stderr.
fn run(mut command: Command) -> (bool, String) {
    let mut child = command.spawn().unwrap();
    let status = wait_bounded(&mut child, BOUND);
    (status.success(), common::stderr_of(&mut child))
}

#[test]
fn another_user_and_an_anonymous_device_get_a_shared_tree() {
    let dir = TempDir::new("share-any-user");
    let server = ServeProcess::start(&dir.0);
    let (alice, bob) = (server.token("alice"), server.token("bob"));
    let tree = dir.path("photos");
    fs::create_dir_all(tree.join("2026/winter")).unwrap();
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    fs::write(tree.join("2026/winter/big.bin"), &big).unwrap();
    fs::write(tree.join("notes.txt"), b"a note").unwrap();

    let (sharer, ticket) = share(&server, &alice, &dir, &tree);
    assert!(ticket.starts_with("pp2"), "{ticket}");

    for (who, token) in [("bob", Some(bob.as_str())), ("anonymous", None)] {
        let out = dir.path(who);
        let (ok, err) = run(get(&server, token, &ticket, &out));
        assert!(ok, "{who}: {err}");
        for file in ["photos/2026/winter/big.bin", "photos/notes.txt"] {
            assert!(
                same_bytes(&tree.join(&file[7..]), &out.join(file)),
                "{who}: {file} differs"
            );
        }
    }

    // Stopped: the ticket is refused with a sentence, not a hang.
    drop(sharer);
    let (ok, err) = run(get(&server, Some(&bob), &ticket, &dir.path("late")));
    assert!(!ok);
    assert!(err.contains("not sharing it now"), "{err}");
    assert!(!dir.path("late/photos/notes.txt").exists());

    // Shared again by the same device: the same ticket.
    let (_sharer, again) = share(&server, &alice, &dir, &tree);
    assert_eq!(again, ticket);
}

#[test]
fn a_damaged_ticket_or_a_pp1_ticket_without_a_token_is_refused() {
    let dir = TempDir::new("share-bad-ticket");
    let server = ServeProcess::start(&dir.0);
    let alice = server.token("alice");
    let file = dir.path("a.txt");
    fs::write(&file, b"hello").unwrap();
    let (_sharer, ticket) = share(&server, &alice, &dir, &file);

    // The last characters carry the door's key: another key is another door,
    // which the sharing device never opened.
    let at = ticket.len() - 5;
    let other = if &ticket[at..=at] == "a" { "b" } else { "a" };
    let damaged = format!("{}{other}{}", &ticket[..at], &ticket[at + 1..]);
    let (ok, err) = run(get(&server, None, &damaged, &dir.path("out")));
    assert!(!ok);
    assert!(err.contains("not sharing it now"), "{err}");

    let (ok, err) = run(get(
        &server,
        None,
        &ticket[..ticket.len() - 3],
        &dir.path("out"),
    ));
    assert!(!ok);
    assert!(err.contains("damaged"), "{err}");

    let pp1 = format!("pp1{}", "a".repeat(52));
    let (ok, err) = run(get(&server, None, &pp1, &dir.path("out")));
    assert!(!ok);
    assert!(err.contains("--token"), "{err}");
}
