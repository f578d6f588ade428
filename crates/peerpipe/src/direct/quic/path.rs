//! One QUIC attempt: exchange certificate pins and addresses inside the
//! session, connect (the offering side dials, the answering side accepts), then
//! carry session packets on the connection's one stream.
//!
//! The offering side is always the QUIC client, so exactly one connection
//! survives. The answering side, besides waiting, sends STUN datagrams from
//! its QUIC socket to the offering side's addresses when they are not
//! loopback: they open the answerer's NAT for the offerer's dial (hole
//! punching), and the offerer's socket drops them as STUN nobody asked for.
//! (A QUIC dial did the punching once; the offerer refused it for its
//! certificate and logged a mismatch on every attempt.)
//!
//! The path is trusted by the session (its packets skip the session's own
//! encryption): the connection is encrypted by QUIC and both certificates are
//! pinned to what the authenticated session delivered.

use std::sync::Arc;

use bytes::Bytes;
use peerpipe_proto::direct::{DirectSignal, QuicParams};
use peerpipe_proto::session::MAX_PACKET_LEN;
use tokio::sync::mpsc;

use super::{self as quic, Accepted, QuicNode};
use crate::direct::{DirectEvent, OPEN_TIMEOUT, OUT_QUEUE, Task};

/// How long an ending path waits for the peer to read what it sent last.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How often a path's QUIC statistics go to the debug log.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a QUIC attempt: ours (`theirs` = `None`) or an answer to the peer's offer.
pub(in crate::direct) async fn run(
    node: Arc<QuicNode>,
    theirs: Option<QuicParams>,
    mut task: Task,
) {
    let path = task.path;
    let made =
        tokio::time::timeout_at(task.open_by.into(), connect(&node, theirs, &mut task)).await;
    let why = match made {
        Ok(Ok(Some(accepted))) => carry(accepted, &mut task).await,
        Ok(Ok(None)) => None,
        Ok(Err(why)) => Some(why),
        Err(_) => Some(format!("QUIC not connected after {OPEN_TIMEOUT:?}")),
    };
    if let Some(why) = why {
        let _ = task.events.send(DirectEvent::Down(path, why)).await;
    }
}

/// Signals and connects; `None` when the driver dropped the attempt.
async fn connect(
    node: &QuicNode,
    theirs: Option<QuicParams>,
    task: &mut Task,
) -> Result<Option<Accepted>, String> {
    let ours = QuicParams {
        pin: node.pin(),
        token: rand::random(),
        candidates: node.candidates(&task.stun).await,
    };
    let attempt = task.attempt;
    tracing::debug!(attempt, candidates = ?ours.candidates, "QUIC candidates");
    match theirs {
        None => {
            let offer = DirectSignal::QuicOffer {
                attempt,
                quic: ours,
            };
            if !send_signal(task, offer).await {
                return Ok(None);
            }
            let answer = loop {
                match task.signals.recv().await {
                    Some(DirectSignal::QuicAnswer { quic, .. }) => break quic,
                    Some(_) => {}
                    None => return Ok(None),
                }
            };
            tracing::debug!(attempt, candidates = ?answer.candidates, "dialing over QUIC");
            let made = node
                .connect(&answer.candidates, answer.pin, answer.token)
                .await;
            made.map(Some).map_err(|e| e.to_string())
        }
        Some(theirs) => {
            let waiter = node.wait_for(theirs.pin, ours.token);
            let answer = DirectSignal::QuicAnswer {
                attempt,
                quic: ours,
            };
            if !send_signal(task, answer).await {
                return Ok(None);
            }
            let remote: Vec<_> = theirs
                .candidates
                .iter()
                .filter(|a| !a.ip().is_loopback())
                .copied()
                .collect();
            let punch = async {
                if !remote.is_empty() {
                    node.punch(&remote).await;
                }
                std::future::pending::<()>().await;
            };
            tokio::select! {
                arrived = waiter.arrived() => {
                    arrived.map(Some).ok_or_else(|| "the QUIC endpoint closed".to_owned())
                }
                () = punch => Ok(None),
                () = wait_dropped(task) => Ok(None),
            }
        }
    }
}

/// Waits until the driver drops the attempt (other signals are ignored).
async fn wait_dropped(task: &mut Task) {
    while task.signals.recv().await.is_some() {}
}

async fn send_signal(task: &Task, signal: DirectSignal) -> bool {
    task.events
        .send(DirectEvent::Signal(task.path, signal))
        .await
        .is_ok()
}

/// Carries session packets on the connection until it fails (the reason) or
/// the driver drops the attempt (`None`).
async fn carry(accepted: Accepted, task: &mut Task) -> Option<String> {
    let (connection, mut send, mut recv) = accepted;
    let path = task.path;
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(OUT_QUEUE);
    if task
        .events
        .send(DirectEvent::Up(path, out_tx))
        .await
        .is_err()
    {
        return None;
    }
    // Reads run on their own: a read is not cancel-safe inside a select.
    let events = task.events.clone();
    let mut reader = tokio::spawn(async move {
        loop {
            match quic::read_packet(&mut recv, MAX_PACKET_LEN).await {
                Ok(Some(packet)) => {
                    if events
                        .send(DirectEvent::Packet(path, packet))
                        .await
                        .is_err()
                    {
                        return "the connection ended".to_owned();
                    }
                }
                Ok(None) => return "the peer closed the QUIC path".to_owned(),
                Err(e) => return e.to_string(),
            }
        }
    });
    let mut routed = true;
    let mut report = tokio::time::interval(STATS_EVERY);
    let why = loop {
        tokio::select! {
            _ = report.tick() => {
                let stats = connection.stats();
                tracing::debug!(
                    rtt = ?stats.path.rtt,
                    cwnd = stats.path.cwnd,
                    sent = stats.path.sent_packets,
                    lost = stats.path.lost_packets,
                    congestion_events = stats.path.congestion_events,
                    mtu = stats.path.current_mtu,
                    "QUIC path"
                );
            }
            packet = out_rx.recv(), if routed => match packet {
                Some(packet) => {
                    if let Err(e) = quic::write_packet(&mut send, packet).await {
                        break Some(e.to_string());
                    }
                }
                // The driver dropped the route; the attempt's end follows.
                None => routed = false,
            },
            signal = task.signals.recv() => {
                if signal.is_none() {
                    // Dropped: send what the session queued last (its close
                    // packet perhaps), and give the peer a moment to read it.
                    while let Ok(packet) = out_rx.try_recv() {
                        if quic::write_packet(&mut send, packet).await.is_err() {
                            break;
                        }
                    }
                    let _ = send.finish();
                    let _ = tokio::time::timeout(FLUSH_WAIT, send.stopped()).await;
                    break None;
                }
            }
            read = &mut reader => {
                break Some(read.unwrap_or_else(|e| e.to_string()));
            }
        }
    };
    reader.abort();
    connection.close(0u32.into(), b"path closed");
    why
}
