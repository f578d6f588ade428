//! Paths: which carriers are live, which one packets go out on, which are
//! trusted, and what was last heard on the current one ([`Paths`], the
//! session's part for them); when to leave a path for its goodput is `choice`'s.

use std::time::Duration;

use super::PathId;
use super::choice::{Choice, PathChoice};
use crate::time::Instant;

/// The session's paths.
#[derive(Debug)]
pub(super) struct Paths {
    /// Live paths, the current one last.
    live: Vec<PathId>,
    /// Paths whose carrier encrypts and authenticates end to end with the peer
    /// (see `Session::trust_path`): packets on them go unencrypted.
    trusted: Vec<PathId>,
    /// When something authentic last arrived on the current path (or it became
    /// current).
    pub current_heard: Instant,
    /// When fresh reliable data last arrived on the current path (or it became
    /// current): resends of old packets do not show the peer sends there.
    pub current_fresh: Instant,
    /// The path the packet being handled came on.
    pub packet_path: Option<PathId>,
    /// Goodput per path, and when to leave or retry one.
    pub choice: PathChoice,
}

impl Paths {
    /// No path yet.
    pub fn new(now: Instant) -> Self {
        Self {
            live: Vec::new(),
            trusted: Vec::new(),
            current_heard: now,
            current_fresh: now,
            packet_path: None,
            choice: PathChoice::default(),
        }
    }

    /// The path packets go out on.
    pub fn current(&self) -> Option<PathId> {
        self.live.last().copied()
    }

    /// Whether `path` is live.
    pub fn contains(&self, path: PathId) -> bool {
        self.live.contains(&path)
    }

    /// Whether no path is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Whether there is a live path besides the current one.
    pub fn has_alternative(&self) -> bool {
        self.live.len() > 1
    }

    /// Whether `path` is the only live path, or none is.
    pub fn is_only(&self, path: PathId) -> bool {
        self.live.iter().all(|p| *p == path)
    }

    /// Whether the packet being handled came on the current path.
    pub fn packet_on_current(&self) -> bool {
        self.packet_path.is_some() && self.packet_path == self.current()
    }

    /// `path` becomes the current one.
    pub fn make_current(&mut self, path: PathId) {
        self.live.retain(|p| *p != path);
        self.live.push(path);
    }

    /// `path` becomes a standby: live, but the first to go.
    pub fn make_standby(&mut self, path: PathId) {
        self.live.retain(|p| *p != path);
        self.live.insert(0, path);
    }

    /// `path` is no longer used (it failed, or the shell took it down; trust
    /// goes with [`Paths::remove`] only).
    pub fn fail(&mut self, path: PathId) {
        self.live.retain(|p| *p != path);
        self.choice.removed(path);
    }

    /// `path` went silent: a standby, the first to go, with its goodput
    /// forgotten, so that the peer sending on it again brings it back.
    pub fn demote(&mut self, path: PathId) {
        self.make_standby(path);
        self.choice.removed(path);
    }

    /// `path` is gone.
    pub fn remove(&mut self, path: PathId) {
        self.fail(path);
        self.trusted.retain(|p| *p != path);
    }

    /// Trusts `path`'s carrier to encrypt and authenticate end to end.
    pub fn trust(&mut self, path: PathId) {
        if !self.trusted.contains(&path) {
            self.trusted.push(path);
        }
    }

    /// Asks the path choice whether to move (`unacked` bytes in flight, a
    /// `backlog` waiting): the path to make current, if any. A path it leaves
    /// stays up as a standby, first to go.
    pub fn choose(
        &mut self,
        now: Instant,
        rtt: Duration,
        unacked: u64,
        backlog: bool,
    ) -> Option<PathId> {
        match self.choice.poll(now, rtt, &self.live, unacked, backlog)? {
            Choice::Leave { from, to } => {
                self.make_standby(from);
                Some(to)
            }
            Choice::Retry(path) => Some(path),
        }
    }

    /// Whether `path` is trusted.
    pub fn is_trusted(&self, path: PathId) -> bool {
        self.trusted.contains(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_path_is_the_last_made_current_and_standbys_go_first() {
        let mut p = Paths::new(Instant::now());
        assert!(p.is_only(PathId(1)) && p.current().is_none());
        p.make_current(PathId(1));
        p.make_current(PathId(2));
        p.make_standby(PathId(3));
        assert_eq!(p.current(), Some(PathId(2)));
        p.trust(PathId(2));
        p.fail(PathId(2));
        assert!(!p.contains(PathId(2)) && p.is_trusted(PathId(2)));
        assert_eq!(p.current(), Some(PathId(1)));
        p.remove(PathId(2));
        assert!(!p.is_trusted(PathId(2)));
        assert!(p.has_alternative());
        p.fail(PathId(1));
        assert_eq!(p.current(), Some(PathId(3)), "the standby is the last left");
        assert!(!p.has_alternative() && p.is_only(PathId(3)));
    }
}
