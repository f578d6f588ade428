//! The connection carries its data on the path with the better goodput, not
//! the better kind: a WebRTC data channel on a direct link with 1 % random
//! loss (SCTP halves its window at every loss: a few Mbit/s) next to a clean
//! relay of 200 Mbit/s each hop gets the traffic when it comes up, is
//! measured, and left for the relay; the stream arrives exact.
//!
//! Opt-in (`--ignored`); the WAN step of `.ci/run` runs it.

#[path = "common/wan.rs"]
mod wan;

use std::time::Duration;

use peerpipe_netem::{Entered, LinkConfig, Loss, enter};
use wan::Wan;
use wan::files::write_input;

const TEST: &str = "data_goes_on_the_path_with_the_better_goodput";

#[test]
#[ignore = "needs unshare, nsenter and ip: the WAN step of .ci/run"]
fn data_goes_on_the_path_with_the_better_goodput() {
    match enter(&[TEST, "--exact", "--ignored", "--nocapture"]).expect("running unshare -rnm") {
        Entered::Ran(status) => assert!(status.success(), "the test inside the namespaces failed"),
        Entered::Inside => path_choice(),
    }
}

fn path_choice() {
    let relay_hop = LinkConfig {
        rate_bps: Some(200_000_000),
        queue: 1000,
        ..LinkConfig::delay(Duration::from_millis(5))
    };
    let direct = LinkConfig {
        loss: Loss::Bernoulli(0.01),
        rate_bps: Some(200_000_000),
        queue: 1000,
        ..LinkConfig::delay(Duration::from_millis(20))
    };
    let dir = std::env::temp_dir().join(format!("peerpipe-wan-choice-{}", std::process::id()));
    let mut wan = Wan::start(&relay_hop, 5, &dir).expect("the lab");
    wan.lab.set_path("a", "b", &direct);
    wan.limit = Duration::from_secs(120);
    let input = wan.path("file.bin");
    write_input(&input, 96 << 20, 0xc401ce).unwrap();
    let output = wan.path("out.bin");
    let run = wan
        .stream(&input, &output, &["--no-quic"])
        .unwrap_or_else(|e| panic!("the stream: {e:#}"));
    eprintln!("96 MiB in {:.1?} on {}", run.took, run.paths);
    let direct_bytes = wan.lab.stats("a", "b").delivered_bytes;
    assert!(
        run.paths.contains("direct"),
        "the direct path never came up: {}\n{}",
        run.paths,
        run.sender_log
    );
    assert!(
        run.paths.ends_with("relay"),
        "the data stayed on the lossy data channel: {}",
        run.paths
    );
    // The data channel carried a few MiB while it was measured.
    assert!(
        direct_bytes < 48 << 20,
        "{direct_bytes} bytes went over the direct link"
    );
    drop(wan);
    let _ = std::fs::remove_dir_all(&dir);
}
