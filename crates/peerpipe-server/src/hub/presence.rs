//! Presence: which devices are online and for which user, and which devices
//! each user had, to tell "offline" from "no such device" without leaking
//! anything across users.
//!
//! With [`super::sessions`] (where relayed frames and negotiation go) this is
//! the part that a cluster of server nodes keeps in shared storage instead of
//! this process's memory: the hub asks it who is online and whom to tell, and
//! never looks at its maps.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use peerpipe_proto::id::DeviceId;
use peerpipe_proto::signal::PeerInfo;

use super::{Handle, Member};

/// Offline devices remembered per user (to answer `peer_offline` rather than `not_found`).
pub(super) const KNOWN_PER_USER: usize = 256;

/// Online devices per user, and the devices each user had.
#[derive(Debug, Default)]
pub(super) struct Presence {
    /// Online devices.
    devices: HashMap<DeviceId, Member>,
    /// How many of them are connections of other nodes.
    remote: usize,
    /// Online devices per user.
    users: HashMap<Arc<str>, BTreeSet<DeviceId>>,
    /// Devices admitted since start, with their (latest) user: the newest
    /// [`KNOWN_PER_USER`] of each user, so a user minting keys cannot grow it without bound.
    known: HashMap<DeviceId, Arc<str>>,
    /// Per user, the order its devices were first admitted in, to forget the oldest.
    known_order: HashMap<Arc<str>, VecDeque<DeviceId>>,
}

impl Presence {
    /// Online devices connected to this node.
    pub fn local_len(&self) -> usize {
        self.devices.len() - self.remote
    }

    /// The online connection of `device`.
    pub fn get(&self, device: &DeviceId) -> Option<&Member> {
        self.devices.get(device)
    }

    /// The name `user` as held for its online devices, to share.
    pub fn user(&self, user: &str) -> Option<Arc<str>> {
        self.users.get_key_value(user).map(|(k, _)| k.clone())
    }

    /// How many devices `user` has online.
    pub fn online_count(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, BTreeSet::len)
    }

    /// Whether `me` is its device's registered connection (not one replaced since).
    pub fn is_current(&self, me: &Member) -> bool {
        self.devices
            .get(&me.device)
            .is_some_and(|m| m.handle.conn == me.handle.conn)
    }

    /// Whether `device` was ever admitted for `user` (and is still remembered).
    pub fn knows(&self, device: &DeviceId, user: &str) -> bool {
        self.known.get(device).is_some_and(|u| **u == *user)
    }

    /// `me` is online; with `remember`, its device is remembered for its user.
    pub fn join(&mut self, me: &Member, remember: bool) {
        if let Some(old) = self.devices.insert(me.device, me.clone()) {
            self.remote -= usize::from(old.handle.remote().is_some());
        }
        self.remote += usize::from(me.handle.remote().is_some());
        self.users
            .entry(me.user.clone())
            .or_default()
            .insert(me.device);
        if remember {
            self.remember(me.device, &me.user);
        }
    }

    /// Takes `device` offline; returns the connection it had.
    pub fn leave(&mut self, device: &DeviceId) -> Option<Member> {
        let old = self.devices.remove(device)?;
        self.remote -= usize::from(old.handle.remote().is_some());
        if let Some(set) = self.users.get_mut(&old.user) {
            set.remove(device);
            if set.is_empty() {
                self.users.remove(&old.user);
            }
        }
        Some(old)
    }

    /// The online devices of `user` but `except`.
    fn members_of<'a>(&'a self, user: &str, except: DeviceId) -> impl Iterator<Item = &'a Member> {
        self.users
            .get(user)
            .into_iter()
            .flatten()
            .filter(move |d| **d != except)
            .filter_map(|d| self.devices.get(d))
    }

    /// What `user`'s online devices but `except` are, for a peer list.
    pub fn peers_of(&self, user: &str, except: DeviceId) -> Vec<PeerInfo> {
        self.members_of(user, except).map(Member::info).collect()
    }

    /// The connections of `user`'s online devices but `except`, which hear of
    /// its presence.
    pub fn others_of(&self, user: &str, except: DeviceId) -> Vec<Handle> {
        self.members_of(user, except)
            .map(|m| m.handle.clone())
            .collect()
    }

    /// Records that `device` belongs to `user`, forgetting the user's oldest
    /// offline device past [`KNOWN_PER_USER`].
    fn remember(&mut self, device: DeviceId, user: &Arc<str>) {
        if self.known.insert(device, user.clone()).as_ref() == Some(user) {
            return;
        }
        let order = self.known_order.entry(user.clone()).or_default();
        order.push_back(device);
        while order.len() > KNOWN_PER_USER {
            let Some(pos) = order.iter().position(|d| !self.devices.contains_key(d)) else {
                break;
            };
            if let Some(old) = order.remove(pos)
                && self.known.get(&old) == Some(user)
            {
                self.known.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerpipe_proto::id::Identity;

    fn device(n: u16) -> DeviceId {
        let mut seed = [0u8; 32];
        seed[..2].copy_from_slice(&n.to_be_bytes());
        Identity::from_secret_bytes(seed).device_id()
    }

    #[test]
    fn known_devices_per_user_are_bounded_keeping_the_newest() {
        let mut p = Presence::default();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        p.remember(device(0), &bob);
        for n in 1..=(KNOWN_PER_USER as u16 + 50) {
            p.remember(device(n), &alice);
        }
        assert_eq!(p.known.len(), KNOWN_PER_USER + 1);
        assert!(p.knows(&device(0), "bob"));
        assert!(!p.knows(&device(0), "alice"), "nothing leaks across users");
        assert!(!p.knows(&device(1), "alice"));
        assert!(p.knows(&device(KNOWN_PER_USER as u16 + 50), "alice"));
        // Remembering a known device again does not grow anything.
        p.remember(device(KNOWN_PER_USER as u16 + 50), &alice);
        assert_eq!(p.known_order[&alice].len(), KNOWN_PER_USER);
    }
}
