//! The table of requests out to the server and how a failed one is answered.

use super::*;

/// The longest wait between two attempts to route a code's connection again.
const RESUME_RETRY_MAX: Duration = Duration::from_secs(2);

impl Actor {
    pub(super) fn request_id(&mut self) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        req
    }

    pub(super) fn request_failed(&mut self, req: u64, code: ErrorCode, message: String) {
        match self.pending.remove(&req) {
            Some(Pending::ListPeers(reply)) => {
                let _ = reply.send(Err(RequestError::Server { code, message }));
            }
            Some(Pending::Connect { reply, .. }) => {
                let _ = reply.send(Err(connect_error(code, message, self.cfg.connect_timeout)));
            }
            Some(Pending::CodeAllocate(reply) | Pending::CodeClaim(reply)) => {
                let _ = reply.send(Err(code_error(code, message)));
            }
            Some(Pending::Accept(id)) => {
                tracing::debug!(session = %id, %code, "accept refused: {message}");
                self.route_down(id);
                if let Some(conn) = self.conns.get(&id) {
                    let reason = match code {
                        ErrorCode::NotFound | ErrorCode::Timeout | ErrorCode::PeerOffline => {
                            CloseReason::Cancelled
                        }
                        code => {
                            CloseReason::Protocol(format!("the server refused: {code}: {message}"))
                        }
                    };
                    deliver(&conn.input, Input::Abort(reason));
                }
            }
            Some(Pending::Resume(id)) => {
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                conn.resuming = false;
                match code {
                    // Wait for the peer to come back (its PeerOnline resumes).
                    ErrorCode::PeerOffline | ErrorCode::Timeout | ErrorCode::RateLimited
                        if !conn.by_code =>
                    {
                        tracing::debug!(session = %id, %code, "cannot route yet: {message}");
                    }
                    // A code's peer is another user's device: `not_found` until it
                    // is back and allows the route again. Try again later; the
                    // connection's idle time-out bounds the waiting.
                    ErrorCode::PeerOffline
                    | ErrorCode::Timeout
                    | ErrorCode::RateLimited
                    | ErrorCode::NotFound => {
                        conn.retries = conn.retries.saturating_add(1);
                        let delay = backoff(conn.retries, self.cfg.backoff_min, RESUME_RETRY_MAX);
                        conn.retry_at = Some(Instant::now() + delay);
                        tracing::debug!(session = %id, %code, ?delay, "cannot route yet: {message}");
                    }
                    // The peer's node does not know the connection any more.
                    _ => {
                        tracing::debug!(session = %id, %code, "routing refused: {message}");
                        let _ = conn
                            .input
                            .try_send(Input::Abort(CloseReason::PeerDisconnected));
                    }
                }
            }
            Some(Pending::ResumeAccept(route)) => {
                tracing::debug!(%route, %code, "new route refused: {message}");
                self.route_down(route);
            }
            None => {
                tracing::debug!(req, %code, "error for a request nobody waits for: {message}")
            }
        }
    }
}

pub(super) fn waiter_not_connected(waiter: Waiter) {
    match waiter {
        Waiter::Connect(tx) => {
            let _ = tx.send(Err(ConnectError::NotConnected));
        }
        Waiter::Accept(tx) => {
            let _ = tx.send(Err(AcceptError::NotConnected));
        }
    }
}

pub(super) fn connect_error(code: ErrorCode, message: String, limit: Duration) -> ConnectError {
    match code {
        ErrorCode::PeerOffline => ConnectError::PeerOffline,
        ErrorCode::NotFound => ConnectError::NotFound,
        ErrorCode::Forbidden => ConnectError::Forbidden,
        ErrorCode::Rejected => ConnectError::Rejected,
        ErrorCode::Timeout => ConnectError::TimedOut(limit),
        code => ConnectError::Server { code, message },
    }
}

pub(super) fn code_error(code: ErrorCode, message: String) -> CodeError {
    match code {
        ErrorCode::NotFound => CodeError::NotFound,
        ErrorCode::Forbidden => CodeError::Forbidden(message),
        ErrorCode::RateLimited => CodeError::RateLimited,
        ErrorCode::CodeTaken => CodeError::Taken,
        code => CodeError::Server { code, message },
    }
}
