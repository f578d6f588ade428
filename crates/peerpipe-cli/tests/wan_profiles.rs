//! A file crosses each emulated WAN link byte for byte: send/receive on the
//! default path and a connect → listen stream over the relay alone.
//!
//! Sender, receiver and server each in a network namespace of the test's own,
//! joined by `peerpipe-netem` links (see `peerpipe_netem::Profile`). Opt-in
//! (`--ignored`, release build); `.ci/run` runs the WAN suite as its own step.

#[path = "common/wan.rs"]
mod wan;

use std::time::Duration;

use peerpipe_netem::{Entered, Profile, enter};
use wan::Wan;
use wan::files::write_input;

const MIB: u64 = 1024 * 1024;

/// Runs `test` inside the namespaces (this test binary again, under `unshare`).
fn in_lab(test: &str, profile: Profile) {
    match enter(&[test, "--exact", "--ignored", "--nocapture"]).expect("running unshare -rnm") {
        Entered::Ran(status) => assert!(status.success(), "the test inside the namespaces failed"),
        Entered::Inside => transfer(profile),
    }
}

fn transfer(profile: Profile) {
    let dir = std::env::temp_dir().join(format!(
        "peerpipe-wan-{}-{}",
        profile.name,
        std::process::id()
    ));
    let mut wan = Wan::start(&profile.link, 7, &dir).expect("the lab");
    wan.limit = Duration::from_secs(120);
    let input = wan.path("file.bin");
    write_input(&input, 24 * MIB, 0x5eed).unwrap();
    let run = wan
        .send_receive(&[&input], &wan.path("received"), &[])
        .unwrap_or_else(|e| panic!("{}: send/receive: {e:#}", profile.name));
    eprintln!(
        "{}: send/receive {:.1?} on {}",
        profile.name, run.took, run.paths
    );
    let output = wan.path("streamed.bin");
    let run = wan
        .stream(&input, &output, &["--relay-only"])
        .unwrap_or_else(|e| panic!("{}: stream --relay-only: {e:#}", profile.name));
    eprintln!("{}: relay-only stream {:.1?}", profile.name, run.took);
    assert_eq!(run.paths, "relay", "--relay-only took a direct path");
    drop(wan);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs unshare, nsenter and ip: the WAN step of .ci/run"]
fn a_file_crosses_the_lossy_link() {
    in_lab("a_file_crosses_the_lossy_link", Profile::lossy());
}

#[test]
#[ignore = "needs unshare, nsenter and ip: the WAN step of .ci/run"]
fn a_file_crosses_the_distant_link() {
    in_lab("a_file_crosses_the_distant_link", Profile::distant());
}

#[test]
#[ignore = "needs unshare, nsenter and ip: the WAN step of .ci/run"]
fn a_file_crosses_the_long_fat_link() {
    in_lab("a_file_crosses_the_long_fat_link", Profile::long_fat());
}

#[test]
#[ignore = "needs unshare, nsenter and ip: the WAN step of .ci/run"]
fn a_file_crosses_the_bursty_link() {
    in_lab("a_file_crosses_the_bursty_link", Profile::bursty());
}
