//! A STUN binding responder on UDP: tells devices the address their socket is
//! seen from, so they can offer it as a server-reflexive candidate.

use std::net::SocketAddr;

use peerpipe_proto::stun;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Answers binding requests on `socket` until `stop` turns true. Anything else
/// is dropped without an answer (no amplification: a response is as small as
/// the request plus one 8- or 20-byte attribute).
pub(crate) async fn respond(socket: UdpSocket, mut stop: watch::Receiver<bool>) {
    let mut buf = [0u8; 1500];
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => answer(&socket, &buf[..len], from),
                Err(e) => tracing::debug!("STUN socket: {e}"),
            },
        }
    }
}

fn answer(socket: &UdpSocket, request: &[u8], from: SocketAddr) {
    if let Some(txid) = stun::parse_binding_request(request) {
        let _ = socket.try_send_to(&stun::binding_response(txid, from), from);
    }
}
