//! Test tooling: a userspace link emulator between Linux network namespaces.
//!
//! The kernel's `sch_netem` is not on every machine, so links are emulated
//! here: each host of a [`Lab`] is a network namespace whose one interface is
//! a TUN device held by this process, and a switch thread carries packets
//! from host to host through a [`Link`] per ordered pair, which queues
//! (drop-tail), limits the rate, loses packets at random (independently or in
//! bursts) and delays them (with jitter, never reordering). Every random
//! choice is seeded. [`Profile`] names the links the WAN tests and benchmark
//! use.
//!
//! A lab needs rights over network namespaces: [`enter`] runs the calling
//! program again inside fresh user, network and mount namespaces (`unshare
//! -rnm`), where the copy builds the lab; the host's own network is never
//! touched. It needs `unshare`, `nsenter` (util-linux) and `ip` (iproute2).
//!
//! ```no_run
//! use peerpipe_netem::{Entered, Lab, Profile, enter};
//!
//! # fn main() -> std::io::Result<()> {
//! match enter(&["--exact", "my_test"])? {
//!     Entered::Ran(status) => assert!(status.success()),
//!     Entered::Inside => {
//!         let lab = Lab::start(&["a", "b"], &Profile::lossy().link, 1)?;
//!         let b = lab.addr("b");
//!         let out = lab.command("a", "ping").args(["-c", "1", &b.to_string()]).output()?;
//!         assert!(out.status.success());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The link model alone is sans-IO and runs on any clock:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use peerpipe_netem::{Link, LinkConfig};
//!
//! let t0 = Instant::now();
//! let mut link = Link::new(LinkConfig::delay(Duration::from_millis(20)), 1);
//! assert_eq!(link.send(t0, 1200, "hello"), Some(t0 + Duration::from_millis(20)));
//! assert_eq!(link.poll_arrival(t0 + Duration::from_millis(20)), Some("hello"));
//! ```

mod lab;
mod link;
mod profile;
mod sys;

pub use lab::{Entered, Lab, enter};
pub use link::{Link, LinkConfig, LinkStats, Loss};
pub use profile::Profile;
