//! Presence news for one connection, coalesced per device.
//!
//! When many devices of a user come online together, every one of them is
//! news for every other: n² messages. Queued on the bounded control queue, a
//! burst overflowed it and the server dropped healthy devices as slow
//! consumers. Here each connection keeps only the latest state of each device
//! it has not been told about yet (online with its label, or offline), in the
//! order the devices first changed; the writer sends them after the control
//! frames queued before. Memory is one entry per changed device, bounded by a
//! cap that only a connection that stopped reading reaches.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use peerpipe_proto::id::DeviceId;
use peerpipe_proto::signal::{PeerInfo, ServerMessage};
use tokio::sync::Notify;

/// Presence news waiting for one connection's writer.
#[derive(Debug)]
pub(crate) struct Outbox {
    pending: Mutex<Pending>,
    ready: Notify,
    cap: usize,
}

#[derive(Debug, Default)]
struct Pending {
    /// Devices with news, oldest first.
    order: VecDeque<DeviceId>,
    /// The latest news of each: online (with its info) or offline.
    latest: HashMap<DeviceId, Option<PeerInfo>>,
}

impl Outbox {
    /// An outbox holding news of at most `cap` devices.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            ready: Notify::new(),
            cap: cap.max(1),
        }
    }

    /// Records that `device` is online (`Some`) or offline (`None`), replacing
    /// older news of it. `false` when the outbox is full: the connection has
    /// not read news of `cap` devices.
    pub(crate) fn push(&self, device: DeviceId, online: Option<PeerInfo>) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if !p.latest.contains_key(&device) {
            if p.order.len() >= self.cap {
                return false;
            }
            p.order.push_back(device);
        }
        p.latest.insert(device, online);
        drop(p);
        self.ready.notify_one();
        true
    }

    /// The oldest news, as the message to send. More left wakes the writer again.
    pub(crate) fn take(&self) -> Option<ServerMessage> {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let device = p.order.pop_front()?;
        let news = p.latest.remove(&device)?;
        if p.order.is_empty() {
            // A burst (a thousand devices of the user joining) leaves maps sized
            // for it; an idle connection should not keep them.
            *p = Pending::default();
        } else {
            self.ready.notify_one();
        }
        Some(match news {
            Some(peer) => ServerMessage::PeerOnline { peer },
            None => ServerMessage::PeerOffline { id: device },
        })
    }

    /// Completes when news may be waiting.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerpipe_proto::id::Identity;

    fn device(n: u8) -> DeviceId {
        Identity::from_secret_bytes([n; 32]).device_id()
    }

    fn online(n: u8, label: &str) -> Option<PeerInfo> {
        Some(PeerInfo {
            id: device(n),
            label: label.into(),
        })
    }

    #[test]
    fn news_of_a_device_is_replaced_and_keeps_its_place() {
        let o = Outbox::new(8);
        assert!(o.push(device(1), online(1, "a")));
        assert!(o.push(device(2), online(2, "b")));
        assert!(o.push(device(1), None));
        assert!(o.push(device(1), online(1, "a2")));
        let first = o.take();
        assert!(
            matches!(&first, Some(ServerMessage::PeerOnline { peer }) if peer.label == "a2"),
            "{first:?}"
        );
        assert!(matches!(o.take(), Some(ServerMessage::PeerOnline { .. })));
        assert!(o.take().is_none());
        assert!(o.push(device(2), None));
        assert!(matches!(o.take(), Some(ServerMessage::PeerOffline { id }) if id == device(2)));
    }

    #[test]
    fn a_full_outbox_says_so_and_news_of_known_devices_still_fits() {
        let o = Outbox::new(2);
        assert!(o.push(device(1), None));
        assert!(o.push(device(2), None));
        assert!(!o.push(device(3), None), "a third device does not fit");
        assert!(
            o.push(device(1), online(1, "back")),
            "news of a listed one does"
        );
    }
}
