//! The QUIC endpoint's UDP socket, shared with STUN: binding requests go out
//! from the very socket QUIC uses, so the server-reflexive address they learn
//! is the NAT mapping the peer must dial; their responses are taken out of the
//! datagrams before quinn sees them (a QUIC packet never parses as STUN: its
//! first byte has a top bit set, a STUN message's two top bits are zero).

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use peerpipe_proto::stun::{self, StunError, TransactionId};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::oneshot;

/// The wait after each binding request: three requests, then give up.
const RETRIES: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(750),
    Duration::from_millis(1500),
];

/// A binding request waiting for its response.
struct Pending {
    txid: TransactionId,
    server: SocketAddr,
    reply: oneshot::Sender<SocketAddr>,
}

/// quinn's socket, with STUN binding requests on the side.
pub(super) struct StunSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    pending: Mutex<Vec<Pending>>,
}

impl fmt::Debug for StunSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StunSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl StunSocket {
    pub(super) fn new(inner: Arc<dyn AsyncUdpSocket>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            pending: Mutex::default(),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the STUN server `server` which address this socket has on its side.
    pub(super) async fn server_reflexive(&self, server: SocketAddr) -> Option<SocketAddr> {
        for wait in RETRIES {
            let txid: TransactionId = rand::random();
            let (reply, answer) = oneshot::channel();
            self.pending().push(Pending {
                txid,
                server,
                reply,
            });
            let request = stun::binding_request(txid);
            let sent = self.inner.try_send(&Transmit {
                destination: server,
                ecn: None,
                contents: &request,
                segment_size: None,
                src_ip: None,
            });
            if let Err(e) = sent {
                tracing::trace!(%server, "STUN request not sent: {e}");
            }
            let answered = tokio::time::timeout(wait, answer).await;
            self.pending().retain(|p| p.txid != txid);
            if let Ok(Ok(mapped)) = answered {
                return Some(mapped);
            }
        }
        tracing::debug!(%server, "no answer from the STUN server");
        None
    }

    /// Sends `to` a STUN binding request from this socket, for its NAT's
    /// sake: the mapping toward `to` opens, so `to`'s dial gets in. The peer's
    /// socket takes it for STUN and drops it (it asked nothing of us).
    pub(super) fn punch(&self, to: SocketAddr) {
        let request = stun::binding_request(rand::random());
        let sent = self.inner.try_send(&Transmit {
            destination: to,
            ecn: None,
            contents: &request,
            segment_size: None,
            src_ip: None,
        });
        if let Err(e) = sent {
            tracing::trace!(%to, "hole punch not sent: {e}");
        }
    }

    /// Whether a datagram from `from` is STUN (then it is not for quinn); a
    /// response to one of our requests is handed to its waiter.
    fn intercept(&self, from: SocketAddr, data: &[u8]) -> bool {
        if !stun::is_stun(data) {
            return false;
        }
        let mut pending = self.pending();
        let found = pending.iter().position(|p| {
            p.server == from
                && stun::parse_binding_response(data, p.txid) != Err(StunError::NotOurs)
        });
        if let Some(i) = found {
            let p = pending.swap_remove(i);
            match stun::parse_binding_response(data, p.txid) {
                Ok(mapped) => {
                    let _ = p.reply.send(mapped);
                }
                Err(e) => tracing::debug!(server = %from, "STUN: {e}"),
            }
        }
        true
    }
}

impl AsyncUdpSocket for StunSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            let mut kept = 0;
            for i in 0..n {
                let m = meta[i];
                // STUN responses come one per buffer (GRO batches one flow).
                let single = m.len <= m.stride;
                if single && self.intercept(m.addr, &bufs[i][..m.len]) {
                    continue;
                }
                if kept != i {
                    let (head, tail) = bufs.split_at_mut(i);
                    head[kept][..m.len].copy_from_slice(&tail[0][..m.len]);
                    meta[kept] = m;
                }
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // Only STUN this time: look again (the inner socket registers the
            // waker when nothing is left).
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
