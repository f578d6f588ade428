//! The links between nodes: one outgoing TCP connection per node this node
//! has something for, fed by a [`LinkQueue`], and the incoming ones, whose
//! frames go to [`Cluster::on_frame`].
//!
//! A link's queue is bounded in bytes for relayed frames: a device's reader
//! that relays into a full link waits (the link is a node-to-node pipe, not a
//! device that may stop reading), and a frame the hub relays to a device of
//! another node without waiting is refused as an overflow of that session.
//! Control frames always fit: they are few, and bounded where they come from.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::timeout;

use super::Cluster;
use peerpipe_proto::node_link::{self, Frame, NONCE_LEN};

/// Relayed bytes a link holds queued before relaying into it waits: four
/// sessions with their flow-control windows full.
const LINK_BOUND: usize = 64 << 20;
/// How long a dial, and the challenge and proof after it, may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes written per flush at most.
const WRITE_BATCH: usize = 1 << 20;
/// Links from other nodes still proving themselves, at most: an unproven
/// peer on the link port holds one of these, and 41 bytes of buffer.
const MAX_UNPROVEN: usize = 64;
/// The length of the dialing node's proof on the wire.
const AUTH_LEN: usize = 4 + 1 + 4 + node_link::MAC_LEN;

/// One encoded frame: its head, and the relayed bytes that follow it.
type Item = (Vec<u8>, Option<Bytes>);

/// Frames waiting for one outgoing link.
#[derive(Debug)]
pub(crate) struct LinkQueue {
    inner: Mutex<Inner>,
    ready: Notify,
    room: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Item>,
    bytes: usize,
    closed: bool,
}

fn encoded(frame: &Frame) -> Item {
    let mut head = Vec::with_capacity(32);
    let body = node_link::encode_head(frame, &mut head);
    (head, body)
}

fn cost(item: &Item) -> usize {
    item.0.len() + item.1.as_ref().map_or(0, Bytes::len)
}

impl LinkQueue {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, inner: &mut Inner, item: Item) {
        inner.bytes += cost(&item);
        inner.items.push_back(item);
        self.ready.notify_one();
    }

    /// Queues a control frame: always taken (dropped once the link is closed).
    pub(crate) fn push(&self, frame: &Frame) {
        let mut inner = self.lock();
        if !inner.closed {
            self.append(&mut inner, encoded(frame));
        }
    }

    /// Queues a relayed frame unless the link holds its bound already.
    pub(crate) fn try_push(&self, frame: &Frame) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return true;
        }
        if inner.bytes >= LINK_BOUND {
            return false;
        }
        self.append(&mut inner, encoded(frame));
        true
    }

    /// Queues a relayed frame once the link has room for it.
    pub(crate) async fn push_wait(&self, frame: &Frame) {
        let item = encoded(frame);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.closed {
                    return;
                }
                if inner.bytes < LINK_BOUND {
                    self.append(&mut inner, item);
                    return;
                }
            }
            room.await;
        }
    }

    /// Takes what is queued, up to about [`WRITE_BATCH`] bytes; waits while
    /// nothing is. `None` once the link is closed.
    async fn take(&self) -> Option<Vec<Item>> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                if !inner.items.is_empty() {
                    let mut batch = Vec::new();
                    let mut n = 0;
                    while n < WRITE_BATCH
                        && let Some(item) = inner.items.pop_front()
                    {
                        n += cost(&item);
                        batch.push(item);
                    }
                    inner.bytes -= n;
                    if inner.items.is_empty() {
                        inner.items = VecDeque::new();
                    }
                    drop(inner);
                    self.room.notify_waiters();
                    return Some(batch);
                }
            }
            ready.await;
        }
    }

    /// The node is gone: drops what is queued and whatever comes later, and
    /// ends the writer.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.items = VecDeque::new();
        inner.bytes = 0;
        drop(inner);
        self.ready.notify_one();
        self.room.notify_waiters();
    }
}

/// Reads one link frame; `Ok(None)` at a clean end of the stream.
async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<Option<Frame>> {
    let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    loop {
        match node_link::decode_length(buf) {
            Ok(Some(n)) if buf.len() >= n => {
                let mut frame = buf.split_to(n);
                let _ = frame.split_to(4);
                return node_link::decode_shared(frame.freeze())
                    .map(Some)
                    .map_err(invalid);
            }
            Ok(_) => {}
            Err(e) => return Err(invalid(e)),
        }
        if buf.capacity() - buf.len() < 64 << 10 {
            buf.reserve(256 << 10);
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Dials `addr` and proves this node's identity.
async fn dial(cluster: &Cluster, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    let Some(Frame::Challenge { nonce }) = read_frame(&mut stream, &mut buf).await? else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the node did not send a challenge",
        ));
    };
    let mut out = Vec::new();
    node_link::encode(
        &Frame::Auth {
            node: cluster.id,
            mac: node_link::proof(&cluster.secret, &nonce, cluster.id),
        },
        &mut out,
    );
    stream.write_all(&out).await?;
    Ok(stream)
}

/// Writes `queue` to node `node` at `addr` until the queue is closed,
/// dialing again (with a growing pause) when the connection fails.
pub(super) async fn write_loop(
    cluster: Arc<Cluster>,
    node: u32,
    addr: SocketAddr,
    queue: Arc<LinkQueue>,
) {
    let mut pause = Duration::from_millis(50);
    let mut linked_before = false;
    loop {
        let stream = match timeout(DIAL_TIMEOUT, dial(&cluster, addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(node, %addr, "cannot link to the node: {e}");
                cluster.link_failed(node);
                if wait_or_closed(&queue, pause).await {
                    return;
                }
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(_) => {
                tracing::debug!(node, %addr, "linking to the node timed out");
                if wait_or_closed(&queue, pause).await {
                    return;
                }
                continue;
            }
        };
        tracing::debug!(node, %addr, "linked to the node");
        pause = Duration::from_millis(50);
        let mut out = BufWriter::with_capacity(256 << 10, stream);
        if linked_before {
            // What the broken link held is lost: the node forgets what it has
            // of this one's devices, and both tell each other again.
            let mut reset = Vec::new();
            node_link::encode(&Frame::Reset, &mut reset);
            if out.write_all(&reset).await.is_err() {
                continue;
            }
            cluster.spawn_resync();
        }
        linked_before = true;
        loop {
            let Some(batch) = queue.take().await else {
                return;
            };
            let written = async {
                for (head, body) in &batch {
                    out.write_all(head).await?;
                    if let Some(body) = body {
                        out.write_all(body).await?;
                    }
                }
                out.flush().await
            };
            if let Err(e) = written.await {
                tracing::info!(node, "the link to the node broke: {e}");
                break;
            }
        }
    }
}

/// Sleeps `pause`; true if the queue was closed meanwhile (checked after).
async fn wait_or_closed(queue: &LinkQueue, pause: Duration) -> bool {
    tokio::time::sleep(pause).await;
    queue.lock().closed
}

/// Accepts links from other nodes until the cluster stops.
pub(super) async fn accept_loop(
    cluster: Arc<Cluster>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let unproven = Arc::new(tokio::sync::Semaphore::new(MAX_UNPROVEN));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, from) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accepting a link from a node failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = unproven.clone().try_acquire_owned() else {
            tracing::debug!(%from, "too many unproven links: refusing one");
            continue;
        };
        let cluster = cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_link(&cluster, stream, permit).await {
                tracing::info!(%from, "a link from a node ended: {e}");
            }
        });
    }
    cluster.stop().await;
}

/// Checks an incoming link's proof, then hands its frames to the cluster.
async fn serve_link(
    cluster: &Arc<Cluster>,
    mut stream: TcpStream,
    unproven: tokio::sync::OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let invalid = |msg: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned());
    stream.set_nodelay(true)?;
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut out = Vec::new();
    node_link::encode(&Frame::Challenge { nonce }, &mut out);
    stream.write_all(&out).await?;
    // Exactly one proof, nothing buffered before it checks.
    let mut proof = [0u8; AUTH_LEN];
    match timeout(DIAL_TIMEOUT, stream.read_exact(&mut proof)).await {
        Err(_) => return Err(invalid("no proof in time")),
        // A node checking that this one is alive, or a peer that went away.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) => {}
    }
    let (node, mac) = match node_link::decode(&proof) {
        Ok(Some((Frame::Auth { node, mac }, AUTH_LEN))) => (node, mac),
        _ => return Err(invalid("expected the node's proof first")),
    };
    if !node_link::verify(&cluster.secret, &nonce, node, &mac) {
        cluster.metrics.link_refused();
        return Err(invalid(
            "the node's proof does not verify: is its token secret the same?",
        ));
    }
    if node == cluster.id {
        return Err(invalid("a link from this node itself"));
    }
    if !cluster.alive(node).await {
        return Err(invalid("a link from a node without a heartbeat"));
    }
    drop(unproven);
    let mut buf = BytesMut::with_capacity(64 << 10);
    let end = loop {
        match read_frame(&mut stream, &mut buf).await {
            Ok(Some(frame)) => cluster.on_frame(node, frame),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // Whether the node is gone, or only this link.
    cluster.link_lost(node);
    end
}
