//! A differing file already in `receive`'s output directory: the receiver
//! refuses before fetching anything, names its file and says how to go on;
//! the sender hears only that the receiver ended the transfer, none of the
//! receiver's paths.

mod common;

use std::time::Duration;

use common::{ServeProcess, TempDir, receive, spawn_send, stderr_of, wait_bounded};

#[test]
fn an_existing_differing_file_is_refused_and_its_path_stays_local() {
    let dir = TempDir::new("recv-existing");
    let server = ServeProcess::start(&dir.0);
    let source = dir.path("report.pdf");
    std::fs::write(&source, vec![1u8; 200_000]).unwrap();
    let out = dir.path("private-inbox");
    std::fs::create_dir_all(&out).unwrap();
    let target = out.join("report.pdf");
    // The same size, other bytes: found only by hashing it.
    std::fs::write(&target, vec![2u8; 200_000]).unwrap();
    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);

    let refused = receive(&server, &dir.path("receiver"), &sender.code, &out, &[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains(&format!("{} exists and differs", target.display())),
        "{err}"
    );
    assert!(err.contains("nothing was fetched"), "{err}");
    assert!(err.contains("-o DIR") && err.contains("remove"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(
        !err.contains("ask the sender for a new code"),
        "not a resume: {err}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), vec![2u8; 200_000]);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".peerpipe"))
        .collect();
    assert!(leftovers.is_empty(), "nothing written: {leftovers:?}");

    let sent = wait_bounded(&mut sender.child, Duration::from_secs(30));
    let sender_err = stderr_of(&mut sender.child);
    assert!(!sent.success(), "{sender_err}");
    assert!(
        sender_err.contains("the receiver ended the transfer"),
        "{sender_err}"
    );
    assert!(
        !sender_err.contains("private-inbox") && !sender_err.contains("exists"),
        "the receiver's paths stay its own: {sender_err}"
    );
}
