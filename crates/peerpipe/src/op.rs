//! Operations that wait for the server or another device, and the wait that
//! reports them slow.

use std::future::Future;
use std::time::Duration;

use peerpipe_proto::id::DeviceId;
use peerpipe_proto::signal::SessionId;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// An operation that can be reported [`NodeEvent::Slow`](crate::NodeEvent::Slow).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// [`Node::online_peers`](crate::Node::online_peers).
    ListPeers,
    /// [`Node::connect`](crate::Node::connect) to `peer`.
    Connect {
        /// The target device.
        peer: DeviceId,
    },
    /// [`Incoming::accept`](crate::Incoming::accept).
    Accept {
        /// The session being accepted.
        session: SessionId,
        /// The device that asked.
        peer: DeviceId,
    },
    /// [`Connection::send_confirmed`](crate::Connection::send_confirmed) waiting for the remote application.
    SendConfirmed {
        /// The connection.
        session: SessionId,
        /// The device at the other end.
        peer: DeviceId,
    },
    /// A one-time code exchange ([`Node::offer_code`](crate::Node::offer_code), [`CodeOffer::accept`](crate::CodeOffer::accept),
    /// [`Node::claim_code`](crate::Node::claim_code)) waiting for the server or the other device.
    Code {
        /// The code's number.
        nameplate: u32,
    },
    /// Data sent on a connection (messages or streams) that the peer has not
    /// acknowledged for the slow threshold: the path is stalled or being routed
    /// again. The connection keeps trying until its idle time-out.
    Transfer {
        /// The connection.
        session: SessionId,
        /// The device at the other end.
        peer: DeviceId,
    },
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ListPeers => f.write_str("listing peers"),
            Self::Connect { peer } => write!(f, "connecting to {}", peer.short()),
            Self::Accept { peer, .. } => write!(f, "accepting {}", peer.short()),
            Self::SendConfirmed { peer, .. } => {
                write!(f, "waiting for {} to take a message", peer.short())
            }
            Self::Transfer { peer, .. } => write!(f, "sending to {}", peer.short()),
            Self::Code { nameplate } => write!(f, "exchanging code {nameplate}"),
        }
    }
}

/// Waits for `rx` within `limit`; after `slow`, tells `on_slow` once how long
/// it has waited for `operation` (the caller reports [`NodeEvent::Slow`]).
///
/// `Ok(None)`: the answering side dropped the request (it stopped). `Err(())`:
/// time-out.
///
/// [`NodeEvent::Slow`]: crate::NodeEvent::Slow
pub(crate) async fn wait_op<T>(
    operation: Operation,
    limit: Duration,
    slow: Duration,
    rx: impl Future<Output = Result<T, oneshot::error::RecvError>>,
    on_slow: impl FnOnce(Operation, Duration),
) -> Result<Option<T>, ()> {
    let started = Instant::now();
    let deadline = tokio::time::sleep(limit);
    let slow_timer = tokio::time::sleep(slow);
    tokio::pin!(rx, deadline, slow_timer);
    let mut on_slow = Some(on_slow);
    loop {
        tokio::select! {
            r = &mut rx => return Ok(r.ok()),
            () = &mut deadline => return Err(()),
            () = &mut slow_timer, if on_slow.is_some() => {
                if let Some(report) = on_slow.take() {
                    report(operation.clone(), started.elapsed());
                }
            }
        }
    }
}
