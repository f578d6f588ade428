//! A download from one slow source finishes: the receiver never drops its
//! only source for being slow ("dropping a share source that stalled" was
//! once logged on a 50 Mbit/s, 100 ms link, and the download failed).
//!
//! 3 Mbit/s, 60 ms each way, 1 % loss between every pair of hosts: 6 MiB take
//! about 20 s. Opt-in (`--ignored`); the WAN step of `.ci/run` runs it.

#[path = "common/wan.rs"]
mod wan;

use std::time::Duration;

use peerpipe_netem::{Entered, LinkConfig, Loss, enter};
use wan::Wan;
use wan::files::write_input;

const TEST: &str = "a_single_slow_source_is_not_dropped";

#[test]
#[ignore = "needs unshare, nsenter and ip: the WAN step of .ci/run"]
fn a_single_slow_source_is_not_dropped() {
    match enter(&[TEST, "--exact", "--ignored", "--nocapture"]).expect("running unshare -rnm") {
        Entered::Ran(status) => assert!(status.success(), "the test inside the namespaces failed"),
        Entered::Inside => slow_source(),
    }
}

fn slow_source() {
    let link = LinkConfig {
        loss: Loss::Bernoulli(0.01),
        rate_bps: Some(3_000_000),
        queue: 100,
        ..LinkConfig::delay(Duration::from_millis(60))
    };
    let dir = std::env::temp_dir().join(format!("peerpipe-wan-slow-{}", std::process::id()));
    let mut wan = Wan::start(&link, 3, &dir).expect("the lab");
    wan.limit = Duration::from_secs(180);
    let input = wan.path("slow.bin");
    write_input(&input, 6 << 20, 0x51de).unwrap();
    let run = wan
        .send_receive(&[&input], &wan.path("received"), &[])
        .unwrap_or_else(|e| panic!("send/receive from one slow source: {e:#}"));
    eprintln!(
        "6 MiB from one slow source in {:.1?} on {}",
        run.took, run.paths
    );
    assert!(
        !run.receiver_log.contains("stalled"),
        "the receiver gave up on its only source:\n{}",
        run.receiver_log
    );
    drop(wan);
    let _ = std::fs::remove_dir_all(&dir);
}
