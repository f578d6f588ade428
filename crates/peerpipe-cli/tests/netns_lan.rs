//! Two machines on one LAN and no server: simulated as two network namespaces
//! joined by a veth pair. Machine A runs `send --lan` (a server of its own on
//! its address, the code's number announced by multicast); machine B runs a
//! plain `receive CODE` with no server configured and none running, so it
//! looks on the local network, finds A and receives the file byte-identical
//! through the same code exchange and end-to-end session. A code whose number
//! nobody announces fails with a sentence after the time-out.
//!
//! Opt-in (`--ignored`); `.ci/run` runs it in its network-namespace step.

mod common;

use std::time::Duration;

use common::machines::{on, ran_inside, two_machines};
use common::{Sender, TempDir, same_bytes, wait_bounded};

const TEST: &str = "send_and_receive_find_each_other_on_the_lan";

#[test]
#[ignore = "needs unshare and nsenter: its own step of .ci/run"]
fn send_and_receive_find_each_other_on_the_lan() {
    if ran_inside(TEST) {
        return;
    }
    two_machines();
    let dir = TempDir::new("netns-lan");
    let source = dir.path("holiday.bin");
    let data: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&source, &data).unwrap();

    let mut send = on("ma");
    send.arg("send").arg(&source).arg("--lan");
    let Sender {
        mut child, code, ..
    } = Sender::spawn(send);
    let out = dir.path("received");
    let received = on("mb")
        .args(["receive", &code, "--yes", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&received.stderr);
    assert!(received.status.success(), "{err}");
    assert!(
        err.contains("no server is configured and none runs at ws://127.0.0.1:7878/v1/signal"),
        "{err}"
    );
    assert!(
        err.contains("found the sender on the local network: ws://10.77.0.1:"),
        "{err}"
    );
    assert!(same_bytes(&source, &out.join("holiday.bin")));
    assert!(wait_bounded(&mut child, Duration::from_secs(30)).success());
    let sender_err = common::stderr_of(&mut child);
    assert!(
        sender_err.contains(&format!("peerpipe receive {code} --lan")),
        "the hint names --lan: {sender_err}"
    );

    // Nobody announces this number: a sentence after the time-out.
    let lost = on("mb")
        .args([
            "receive",
            "998877-amber-falcon",
            "--lan",
            "--timeout",
            "2s",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&lost.stderr);
    assert!(!lost.status.success());
    assert!(
        err.contains("no sender of code number 998877 on the local network within 2 s"),
        "{err}"
    );
}
