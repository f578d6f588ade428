//! The WebSocket upgrade of `/v1/signal`, with buffers sized for an idle device.
//!
//! Most admitted devices sit idle for hours, so what a connection holds between
//! bursts is what the server's memory per device is made of. The WebSocket's own
//! read buffer is kept small ([`FRAME_READ`]); under it, [`BurstReader`] reads
//! the socket in large chunks (so a busy relay link still costs one system call
//! per [`CHUNK`]) into a buffer that exists only while read data waits in it and
//! is given back as soon as the socket has nothing more to read.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// How much the WebSocket asks of [`BurstReader`] per read, and the read
/// buffer it keeps allocated for each connection.
const FRAME_READ: usize = 1024;
/// Bytes read from the socket per system call when data is waiting.
const CHUNK: usize = 64 * 1024;

/// The server side of one upgraded `/v1/signal` connection.
pub(crate) type Socket = WebSocketStream<BurstReader<TokioIo<Upgraded>>>;

/// Checks an upgrade request (RFC 6455 section 4.2.1) and returns the
/// `Sec-WebSocket-Accept` value for its key, or the response refusing it.
#[allow(clippy::result_large_err)]
pub(crate) fn accept_key(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, Response> {
    let refuse = |status: StatusCode, why: &'static str| Err((status, why).into_response());
    if method != Method::GET {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade is a GET\n",
        );
    }
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return refuse(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket only (Connection: upgrade, Upgrade: websocket)\n",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut refusal = (
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version (13 is spoken)\n",
        )
            .into_response();
        refusal.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(refusal);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .or_else(|_| refuse(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key\n"))
}

/// The `101 Switching Protocols` answer to an accepted upgrade.
pub(crate) fn switching_protocols(accept: HeaderValue) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// The WebSocket over an upgraded connection; messages and frames over
/// `max_message` bytes are refused.
pub(crate) async fn socket(upgraded: Upgraded, max_message: usize) -> Socket {
    let config = WebSocketConfig::default()
        .read_buffer_size(FRAME_READ)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    WebSocketStream::from_raw_socket(
        BurstReader::new(TokioIo::new(upgraded)),
        Role::Server,
        Some(config),
    )
    .await
}

/// Reads its inner stream [`CHUNK`] bytes at a time, and holds what the caller
/// did not take yet in a buffer that is freed once the stream would block.
#[derive(Debug)]
pub(crate) struct BurstReader<S> {
    inner: S,
    /// Read but not yet taken: `waiting[taken..]`.
    waiting: Vec<u8>,
    taken: usize,
}

impl<S> BurstReader<S> {
    /// Wraps `inner`; nothing is allocated until a read returns more than its
    /// caller asked for.
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            waiting: Vec::new(),
            taken: 0,
        }
    }

    /// The capacity held for read-ahead data (0 when idle).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.waiting.capacity()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BurstReader<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.taken < this.waiting.len() {
            let n = out.remaining().min(this.waiting.len() - this.taken);
            out.put_slice(&this.waiting[this.taken..this.taken + n]);
            this.taken += n;
            if this.taken == this.waiting.len() {
                // Kept while reads come fast; freed below when the socket blocks.
                this.waiting.clear();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if out.remaining() >= CHUNK {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let mut chunk = [MaybeUninit::<u8>::uninit(); CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
            Poll::Pending => {
                this.waiting = Vec::new();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let got = read.filled();
                let n = out.remaining().min(got.len());
                out.put_slice(&got[..n]);
                this.waiting.extend_from_slice(&got[n..]);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BurstReader<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn small_reads_are_served_from_one_chunk_and_the_buffer_is_freed_when_idle() {
        let (mut far, near) = tokio::io::duplex(4 * CHUNK);
        let mut reader = BurstReader::new(near);
        let sent: Vec<u8> = (0..3 * CHUNK / 2).map(|i| (i % 251) as u8).collect();
        far.write_all(&sent).await.unwrap();

        let mut got = Vec::new();
        let mut small = [0u8; 1000];
        while got.len() < sent.len() {
            let n = reader.read(&mut small).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
            if got.len() == 1000 {
                assert!(reader.held() >= CHUNK - 1000, "the rest of the chunk waits");
            }
        }
        assert_eq!(got, sent);

        // Nothing more to read: the pending read gives the buffer back.
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.read(&mut small),
        )
        .await;
        assert!(pending.is_err());
        assert_eq!(reader.held(), 0);

        far.write_all(b"again").await.unwrap();
        drop(far);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"again");
    }

    #[tokio::test]
    async fn large_reads_go_straight_to_the_stream() {
        let (mut far, near) = tokio::io::duplex(4 * CHUNK);
        let mut reader = BurstReader::new(near);
        far.write_all(&[7u8; 3000]).await.unwrap();
        let mut big = vec![0u8; CHUNK];
        let n = reader.read(&mut big).await.unwrap();
        assert_eq!(n, 3000);
        assert_eq!(reader.held(), 0);
    }

    #[test]
    fn upgrade_requests_are_checked() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        // The example of RFC 6455, section 1.3.
        let accept = accept_key(&Method::GET, &h).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            accept_key(&Method::POST, &h).unwrap_err().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );

        let mut old = h.clone();
        old.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let refusal = accept_key(&Method::GET, &old).unwrap_err();
        assert_eq!(refusal.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(refusal.headers()[header::SEC_WEBSOCKET_VERSION], "13");

        let mut plain = h.clone();
        plain.remove(header::UPGRADE);
        assert_eq!(
            accept_key(&Method::GET, &plain).unwrap_err().status(),
            StatusCode::UPGRADE_REQUIRED
        );

        let mut keyless = h;
        keyless.remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(
            accept_key(&Method::GET, &keyless).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
