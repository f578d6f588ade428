//! Machines simulated as network namespaces, for the opt-in `netns_*` tests:
//! each test runs itself again inside namespaces of its own (`unshare -rnm`)
//! and sets up the machines there.

use std::process::Command;

use peerpipe_netem::{Entered, enter};

/// Outside the namespaces: runs `test` again inside namespaces of its own,
/// asserts it passed there and returns true (the caller is done). Inside:
/// returns false, and the test goes on.
pub fn ran_inside(test: &str) -> bool {
    match enter(&[test, "--exact", "--ignored", "--nocapture"]).expect("running unshare -rnm") {
        Entered::Ran(status) => {
            assert!(status.success(), "the test inside the namespaces failed");
            true
        }
        Entered::Inside => false,
    }
}

/// Machines `ma` (10.77.0.1) and `mb` (10.77.0.2) under /run/netns (a tmpfs of
/// this mount namespace), joined by a veth pair, each with a default route
/// over it.
const TWO_MACHINES: &str = r#"
set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
ip netns add ma; ip netns add mb
ip link add eth0 netns ma type veth peer name eth0 netns mb
nsenter --net=/run/netns/ma sh -ec "
  ip link set lo up; ip addr add 10.77.0.1/24 dev eth0; ip link set eth0 up
  ip route add default via 10.77.0.2"
nsenter --net=/run/netns/mb sh -ec "
  ip link set lo up; ip addr add 10.77.0.2/24 dev eth0; ip link set eth0 up
  ip route add default via 10.77.0.1"
"#;

/// Sets up machines `ma` and `mb` (see [`TWO_MACHINES`]).
pub fn two_machines() {
    let status = Command::new("bash")
        .args(["-c", TWO_MACHINES])
        .status()
        .unwrap();
    assert!(status.success(), "setting up the namespaces failed");
}

/// `peerpipe` run on machine `ns`, with no server, token or config file of the
/// user running the tests.
pub fn on(ns: &str) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(env!("CARGO_BIN_EXE_peerpipe"))
        .env_remove("PEERPIPE_TOKEN")
        .env_remove("PEERPIPE_SERVER")
        .env("PEERPIPE_CONFIG", super::no_config());
    command
}
