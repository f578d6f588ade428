//! Routes: where each of a connection's paths sends its packets (the relay's
//! server link or a direct path's task), and the driver's book of them with
//! the one queue slot it may hold.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use peerpipe_proto::relay::{HEADER_LEN, RelayHeader};
use peerpipe_proto::session::{PathId, Session};
use peerpipe_proto::signal::SessionId;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Message;

/// Where a path's packets go.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// The server link, for one server session.
    Relay {
        session: SessionId,
        out: mpsc::Sender<Message>,
    },
    /// A direct path's task.
    Direct { out: mpsc::Sender<Bytes> },
}

/// A relay frame carrying one session packet.
pub(super) fn relay_message(session: SessionId, packet: &[u8]) -> Message {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + packet.len());
    RelayHeader { session }.encode(&mut buf);
    buf.extend_from_slice(packet);
    Message::Binary(buf.freeze())
}

/// A queue slot taken on one path's route.
pub(super) enum Permit {
    Relay(SessionId, mpsc::OwnedPermit<Message>),
    Direct(mpsc::OwnedPermit<Bytes>),
}

/// A full route queue to wait on.
pub(super) enum Full {
    Relay(SessionId, mpsc::Sender<Message>),
    Direct(mpsc::Sender<Bytes>),
}

impl Full {
    /// Waits for a slot (never resolves when the route is gone).
    pub(super) async fn reserve(self) -> Option<Permit> {
        match self {
            Self::Relay(session, out) => out
                .reserve_owned()
                .await
                .ok()
                .map(|p| Permit::Relay(session, p)),
            Self::Direct(out) => out.reserve_owned().await.ok().map(Permit::Direct),
        }
    }
}

/// The driver's paths and the queue slot it holds on one of them.
#[derive(Default)]
pub(super) struct Paths {
    pub(super) routes: HashMap<PathId, Route>,
    pub(super) held: Option<(PathId, Permit)>,
    /// [`PathPolicy::DirectOnly`](crate::PathPolicy::DirectOnly) after the upgrade: relay routes are refused.
    pub(super) relay_forbidden: bool,
    /// The server said the peer left: end the connection at this instant
    /// unless the peer's close packet arrives first.
    pub(super) peer_left: Option<std::time::Instant>,
}

impl Paths {
    /// Sends what the session has for its current path while the route's queue
    /// takes it; returns the queue to wait on when it is full.
    pub(super) fn transmit(
        &mut self,
        session: &mut Session,
        now: std::time::Instant,
    ) -> Option<Full> {
        loop {
            let path = session.current_path()?;
            let Some(route) = self.routes.get(&path) else {
                // Every path the session knows came with a route: cannot happen.
                session.handle_path_down(now, path);
                continue;
            };
            let permit = match self.held.take() {
                Some((held, permit)) if held == path => Ok(permit),
                _ => match route {
                    Route::Relay { session, out } => match out.clone().try_reserve_owned() {
                        Ok(p) => Ok(Permit::Relay(*session, p)),
                        Err(TrySendError::Full(out)) => Err(Some(Full::Relay(*session, out))),
                        Err(TrySendError::Closed(_)) => Err(None),
                    },
                    Route::Direct { out } => match out.clone().try_reserve_owned() {
                        Ok(p) => Ok(Permit::Direct(p)),
                        Err(TrySendError::Full(out)) => Err(Some(Full::Direct(out))),
                        Err(TrySendError::Closed(_)) => Err(None),
                    },
                },
            };
            let permit = match permit {
                Ok(permit) => permit,
                Err(Some(full)) => return Some(full),
                Err(None) => {
                    self.routes.remove(&path);
                    session.handle_path_down(now, path);
                    continue;
                }
            };
            // Nothing to send: the slot goes back (an idle connection must not
            // hold a place in the link's queue).
            let transmit = session.poll_transmit(now)?;
            debug_assert_eq!(transmit.path, path);
            if session.close_reason().is_some() {
                // The close packet goes out on every path, best effort: the
                // relay's copy is ordered before the server's word that this
                // side left, whichever path the peer listens on.
                for (other, route) in &self.routes {
                    if *other != path {
                        match route {
                            Route::Relay { session, out } => {
                                let _ = out.try_send(relay_message(*session, &transmit.payload));
                            }
                            Route::Direct { out } => {
                                let _ = out.try_send(transmit.payload.clone());
                            }
                        }
                    }
                }
            }
            match permit {
                Permit::Relay(server_session, p) => {
                    p.send(relay_message(server_session, &transmit.payload));
                }
                Permit::Direct(p) => {
                    p.send(transmit.payload);
                }
            }
        }
    }
}

/// Waits for room in a full route queue (never resolves without one).
pub(super) async fn reserve(full: Option<Full>) -> Option<Permit> {
    match full {
        Some(full) => full.reserve().await,
        None => std::future::pending().await,
    }
}
