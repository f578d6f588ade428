//! The accept loop: every TCP connection passes a gate before the HTTP layer
//! sees it, and the HTTP layer bounds how long a request head may take.
//!
//! - At most [`Config::max_connections`](crate::Config::max_connections)
//!   connections at once (kept below the process's open-file limit), and at
//!   most [`Config::max_connections_per_ip`](crate::Config::max_connections_per_ip)
//!   from one address (an IPv6 /64 counts as one address: one household).
//! - A connection over a limit gets a clean refusal — HTTP 503 (the server is
//!   full) or 429 (its address has too many), except that `GET /health` is
//!   still answered — from a small reserve of descriptors kept for that; past
//!   the reserve it is closed at once.
//! - The request head must arrive within the handshake time-out (hyper's
//!   header read time-out, also between requests on a kept-alive
//!   connection); a TLS handshake too.
//! - Out of descriptors anyway (`EMFILE`): logged, counted, retried after a
//!   short pause instead of spinning.
//!
//! A connection's place at the gate ([`Permit`]) lives in its socket
//! ([`Counted`]), so a connection upgraded to a WebSocket keeps holding it
//! until the socket closes.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

/// Refusals being answered at once; a new one over that ends the oldest
/// (it had its chance), so silent connections cannot keep others from an
/// answer.
const REFUSAL_RESERVE: usize = 32;
/// How long a refused connection has to send its request line.
const REFUSAL_READ: Duration = Duration::from_secs(2);
/// Descriptors kept free below the open-file limit: refusals, the listener,
/// the STUN socket, logs, files the process opens.
const FD_RESERVE_MIN: usize = 64;
/// How long the loop pauses when the process is out of descriptors.
const EMFILE_PAUSE: Duration = Duration::from_millis(100);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server holds its connection limit.
    Full,
    /// The address holds its limit.
    PerAddress,
}

/// The largest number of connections that fits below the process's
/// open-file limit (Linux: `/proc/self/limits`), at most `wanted`.
pub(crate) fn fit_to_open_file_limit(wanted: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok())
        });
    match soft {
        Some(limit) => {
            let reserve = (limit / 16).max(FD_RESERVE_MIN);
            wanted.min(limit.saturating_sub(reserve)).max(1)
        }
        None => wanted,
    }
}

/// The connection counts, shared by the loop and the permits.
#[derive(Debug)]
pub(crate) struct Gate {
    max_total: usize,
    max_per_address: usize,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Refusals by reason, since start: full, per address, and refusals ended
    /// unanswered to make room for newer ones.
    pub(crate) refused_full: AtomicU64,
    pub(crate) refused_per_address: AtomicU64,
    pub(crate) refused_unanswered: AtomicU64,
    /// Times `accept` failed for want of descriptors.
    pub(crate) accept_errors: AtomicU64,
}

impl Gate {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            refused_full: AtomicU64::new(0),
            refused_per_address: AtomicU64::new(0),
            refused_unanswered: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        })
    }

    /// Connections open now (HTTP and WebSocket).
    pub(crate) fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The connection limit in force.
    pub(crate) fn limit(&self) -> usize {
        self.max_total
    }

    /// The gate's metrics as Prometheus text.
    pub(crate) fn render(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP peerpipe_tcp_connections Open TCP connections (HTTP and WebSocket).\n\
             # TYPE peerpipe_tcp_connections gauge\npeerpipe_tcp_connections {}\n\
             # HELP peerpipe_tcp_connection_limit TCP connections allowed at once.\n\
             # TYPE peerpipe_tcp_connection_limit gauge\npeerpipe_tcp_connection_limit {}\n\
             # HELP peerpipe_refused_connections_total Connections refused at a limit, by reason.\n\
             # TYPE peerpipe_refused_connections_total counter\n\
             peerpipe_refused_connections_total{{reason=\"full\"}} {}\n\
             peerpipe_refused_connections_total{{reason=\"per_address\"}} {}\n\
             peerpipe_refused_connections_total{{reason=\"unanswered\"}} {}\n\
             # HELP peerpipe_accept_errors_total Failed accepts (out of file descriptors).\n\
             # TYPE peerpipe_accept_errors_total counter\npeerpipe_accept_errors_total {}\n",
            self.open(),
            self.max_total,
            load(&self.refused_full),
            load(&self.refused_per_address),
            load(&self.refused_unanswered),
            load(&self.accept_errors),
        )
    }

    /// A place for a connection from `ip`, or why there is none.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let key = crate::limit::address_key(ip);
        let mut per = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refusal::Full);
        }
        let n = per.entry(key).or_insert(0);
        if *n >= self.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            gate: self.clone(),
            key,
        })
    }
}

/// A connection's place at the [`Gate`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<Gate>,
    key: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut per = self
            .gate
            .per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.key);
            }
        }
        self.gate.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that holds its connection's [`Permit`].
pub(crate) struct Counted<S> {
    io: S,
    _permit: Permit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What the loop needs besides the listener.
pub(crate) struct Accept {
    pub(crate) router: Router,
    pub(crate) gate: Arc<Gate>,
    pub(crate) tls: Option<TlsAcceptor>,
    /// Bound on a request head and on a TLS handshake.
    pub(crate) head_timeout: Duration,
    pub(crate) stop: watch::Receiver<bool>,
}

/// Accepts connections on `listener` until the server stops.
pub(crate) async fn run(listener: TcpListener, accept: Accept) {
    let Accept {
        router,
        gate,
        tls,
        head_timeout,
        mut stop,
    } = accept;
    let mut refusals: VecDeque<AbortHandle> = VecDeque::with_capacity(REFUSAL_RESERVE);
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                gate.accept_errors.fetch_add(1, Ordering::Relaxed);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        open = gate.open(),
                        limit = gate.limit(),
                        "accept failed: {e} (out of file descriptors? lower --max-connections)"
                    );
                }
                tokio::time::sleep(EMFILE_PAUSE).await;
                continue;
            }
        };
        match gate.admit(peer.ip()) {
            Ok(permit) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY: {e}");
                }
                let io = Counted {
                    io: tcp,
                    _permit: permit,
                };
                let conn = Connection {
                    router: router.clone(),
                    peer,
                    head_timeout,
                    stop: stop.clone(),
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            match tokio::time::timeout(head_timeout, acceptor.accept(io)).await {
                                Ok(Ok(tls)) => conn.serve(tls).await,
                                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                        None => conn.serve(io).await,
                    }
                });
            }
            Err(why) => {
                let counter = match why {
                    Refusal::Full => &gate.refused_full,
                    Refusal::PerAddress => &gate.refused_per_address,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if why == Refusal::Full
                    && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        limit = gate.limit(),
                        "at the connection limit: refusing new connections with 503"
                    );
                }
                refusals.retain(|task| !task.is_finished());
                if refusals.len() >= REFUSAL_RESERVE
                    && let Some(oldest) = refusals.pop_front()
                {
                    oldest.abort();
                    gate.refused_unanswered.fetch_add(1, Ordering::Relaxed);
                }
                let tls = tls.clone();
                let task = tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            let handshake = acceptor.accept(tcp);
                            if let Ok(Ok(tls)) = tokio::time::timeout(REFUSAL_READ, handshake).await
                            {
                                refuse(tls, why).await;
                            }
                        }
                        None => refuse(tcp, why).await,
                    }
                });
                refusals.push_back(task.abort_handle());
            }
        }
    }
}

/// One admitted connection's HTTP service.
struct Connection {
    router: Router,
    peer: SocketAddr,
    head_timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn serve<S>(mut self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let router = self.router;
        let service = hyper::service::service_fn(move |mut req| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move { router.call(req).await }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.head_timeout)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "HTTP connection ended: {e}");
                }
                return;
            }
            _ = self.stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
        }
        if let Err(e) = conn.await {
            tracing::debug!(%peer, "HTTP connection ended: {e}");
        }
    }
}

/// Answers a connection over a limit: `/health` still, else 503 or 429.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut tcp: S, why: Refusal) {
    let mut head = [0u8; 512];
    let mut len = 0;
    let read = async {
        while len < head.len() && !head[..len].contains(&b'\n') {
            match tcp.read(&mut head[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_READ, read).await;
    let health = head[..len].starts_with(b"GET /health ");
    let response: &[u8] = match (health, why) {
        (true, _) => {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
        }
        (false, Refusal::Full) => {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 5\r\ncontent-length: 46\r\nconnection: close\r\n\r\nthe server is at its limit of connections now\n"
        }
        (false, Refusal::PerAddress) => {
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\nretry-after: 5\r\ncontent-length: 42\r\nconnection: close\r\n\r\ntoo many connections from your address now\n"
        }
    };
    let _ = tokio::time::timeout(REFUSAL_READ, tcp.write_all(response)).await;
    let _ = tcp.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_counts_per_address_and_in_total_and_gives_back() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = gate.admit(a).unwrap();
        let _p2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::PerAddress);
        let _p3 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).unwrap_err(), Refusal::Full);
        drop(p1);
        assert_eq!(gate.open(), 2);
        let _p4 = gate.admit(a).unwrap();
    }

    #[test]
    fn the_limit_stays_below_the_open_file_limit() {
        let fitted = fit_to_open_file_limit(usize::MAX);
        assert!(fitted >= 1);
        assert!(
            fitted < usize::MAX,
            "/proc/self/limits gives a finite limit"
        );
        assert_eq!(fit_to_open_file_limit(5), 5);
    }
}
