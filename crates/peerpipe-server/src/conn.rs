//! One WebSocket connection: the handshake, then a reader loop (control messages,
//! relay forwarding, rate limits, idle time-out) and a writer task that drains
//! the control queue, then presence news, then the relay queue, and sends the
//! pings.
//!
//! The reader never waits for another connection: a relayed frame goes into
//! the receiver's queue for its session ([`RelayQueue`]), bounded by what the
//! session's flow control lets an honest sender have in flight, and the reader
//! reads on. A receiver that stops reading stalls only its own writer; after
//! [`Config::slow_consumer_timeout`](crate::Config::slow_consumer_timeout)
//! without progress that writer closes its own connection as a slow consumer.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use peerpipe_proto::relay::RelayHeader;
use peerpipe_proto::signal::{
    ClientMessage, ErrorCode, Limits, NONCE_LEN, ServerMessage, SessionId, hello_payload,
};
use peerpipe_proto::token::{self, TokenError};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tracing::Instrument as _;

use crate::hub::{
    ControlQueue, Data, Fatal, Handle, Hub, Local, Member, Outbox, RelayQueue, Route,
};
use crate::limit::TokenBucket;
use crate::upgrade::Socket;
use peerpipe_proto::node_link::Frame;

/// Marks "the last binary frame had a bad header" in the refused-frame memory
/// (session 0 is never allocated).
const BAD_HEADER: SessionId = SessionId(0);
/// Capacity of a connection's control queue (frames).
const CONTROL_QUEUE: usize = 32;
/// How long a closing connection may take to send its last frames and hear the
/// peer's close before the socket is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Decrements the open-connection gauge and wakes a waiting shutdown when dropped.
struct ConnGuard(Arc<Hub>, Arc<tokio::sync::Notify>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.metrics.connection_closed() == 0 {
            self.1.notify_waiters();
        }
    }
}

/// Serves one upgraded WebSocket, split into its halves, until it closes.
///
/// It takes the halves rather than the socket: a socket moved into a future stays
/// in its state for the whole connection, and these futures live as long as an
/// idle device.
pub(crate) async fn run(
    hub: Arc<Hub>,
    (sink, stream): (Sink, SplitStream<Socket>),
    shutdown: watch::Receiver<bool>,
    idle: Arc<tokio::sync::Notify>,
    ip: IpAddr,
) {
    let conn = hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("conn", id = conn, device = tracing::field::Empty);
    hub.metrics.connection_opened();
    let _guard = ConnGuard(hub.clone(), idle);
    serve(hub, conn, sink, stream, shutdown, ip)
        .instrument(span)
        .await;
}

async fn serve(
    hub: Arc<Hub>,
    conn: u64,
    sink: Sink,
    mut stream: SplitStream<Socket>,
    shutdown: watch::Receiver<bool>,
    ip: IpAddr,
) {
    let ctrl = Arc::new(ControlQueue::new(CONTROL_QUEUE));
    let relay = Arc::new(RelayQueue::new(
        hub.config.relay_session_queue,
        hub.config.relay_connection_queue,
    ));
    let (kill_tx, kill_rx) = watch::channel(None);
    let (finish_tx, finish_rx) = oneshot::channel();
    // News of every device of the user fits, with room for churn.
    let presence = Arc::new(Outbox::new(
        hub.config.max_devices_per_user.saturating_mul(4).max(256),
    ));
    let handle = Handle {
        conn,
        route: Route::Local(Local {
            ctrl: ctrl.clone(),
            relay: relay.clone(),
            presence: presence.clone(),
            kill: Arc::new(kill_tx),
        }),
    };
    let queues = Queues {
        ctrl: ctrl.clone(),
        presence,
        relay: relay.clone(),
    };
    let timing = WriterTiming {
        ping_interval: hub.config.ping_interval,
        stall: hub.config.slow_consumer_timeout,
    };
    let writer = tokio::spawn(
        write_loop(sink, queues, finish_rx, timing, handle.clone())
            .instrument(tracing::Span::current()),
    );
    let mut stop = Stop {
        kill: kill_rx,
        shutdown,
    };

    let end = match handshake(&hub, &handle, &mut stream, &mut stop, ip).await {
        Ok(me) => {
            let end = read_loop(&hub, &me, &mut stream, &mut stop).await;
            hub.unregister(&me);
            if let Some(cluster) = hub.cluster.get() {
                // Boxed, here and below: a connection's future is as large as
                // its largest await, and it lives as long as an idle device.
                Box::pin(cluster.leave(&me)).await;
            }
            tracing::info!(reason = ?end.as_ref().map(|f| f.code), "device offline");
            end
        }
        Err(fatal) => {
            if let Some(f) = &fatal {
                tracing::debug!(code = %f.code, "handshake failed: {}", f.message);
            }
            fatal
        }
    };
    let last = end.map(|f| {
        hub.metrics.error(f.code);
        (f.code, ServerMessage::error(f.code, f.message).encode())
    });
    let _ = finish_tx.send(last);
    // Keep reading until the peer answers the close (or the grace runs out), so the
    // socket is not dropped with unread data, which would reset the connection and
    // could destroy the last frames before the peer reads them.
    let drain = async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = timeout(CLOSE_GRACE, futures_util::future::join(writer, drain)).await;
    // Frames still arriving for this connection are dropped.
    relay.close();
    ctrl.close();
}

/// What ends a connection from the outside: a kill (replaced, slow consumer) or
/// the server shutting down.
struct Stop {
    kill: watch::Receiver<Option<Fatal>>,
    shutdown: watch::Receiver<bool>,
}

impl Stop {
    async fn wait(&mut self) -> Fatal {
        let shutting_down = || Fatal::new(ErrorCode::ShuttingDown, "the server is shutting down");
        let killed = async {
            // The sender lives in this connection's own handle: it is never dropped
            // while this waits.
            match self.kill.wait_for(Option::is_some).await {
                Ok(k) => k.clone(),
                Err(_) => None,
            }
        };
        tokio::select! {
            Some(f) = killed => f,
            _ = self.shutdown.wait_for(|s| *s) => shutting_down(),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sends the challenge and waits for a valid hello. `Err(None)`: the peer went away.
async fn handshake(
    hub: &Arc<Hub>,
    handle: &Handle,
    stream: &mut SplitStream<Socket>,
    stop: &mut Stop,
    ip: IpAddr,
) -> Result<Member, Option<Fatal>> {
    let cfg = &hub.config;
    let nonce: [u8; NONCE_LEN] = rand::random();
    hub.deliver(
        handle,
        &ServerMessage::Challenge {
            nonce: URL_SAFE_NO_PAD.encode(nonce),
        },
    );
    let deadline = Instant::now() + cfg.handshake_timeout;
    let text = loop {
        let msg = tokio::select! {
            biased;
            f = stop.wait() => return Err(Some(f)),
            _ = sleep_until(deadline) => return Err(Some(Fatal::new(
                ErrorCode::HandshakeTimeout,
                "no valid hello before the handshake time-out",
            ))),
            m = stream.next() => m,
        };
        match msg {
            Some(Ok(Message::Text(t))) => break t,
            Some(Ok(Message::Binary(_))) => {
                return Err(Some(Fatal::new(
                    ErrorCode::BadRequest,
                    "expected a hello text frame first",
                )));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Err(None),
        }
    };
    let (token, device, signature, label) = match ClientMessage::decode(text.as_str()) {
        Ok(ClientMessage::Hello {
            token,
            device,
            signature,
            label,
        }) => (token, device, signature, label),
        Ok(_) => {
            return Err(Some(Fatal::new(
                ErrorCode::BadRequest,
                "expected a hello first",
            )));
        }
        Err(e) => return Err(Some(Fatal::new(e.code(), e.to_string()))),
    };
    let anonymous = token.is_empty();
    if anonymous && !(cfg.allow_anonymous && cfg.allow_codes) {
        return Err(Some(Fatal::new(
            ErrorCode::Forbidden,
            "this server admits no anonymous devices: connect with a token",
        )));
    }
    let user: Arc<str> = if anonymous {
        // Control characters cannot appear in a token's user: no collision, and
        // a user of its own isolates the device from every other one.
        format!("\0anonymous\0{device}").into()
    } else {
        let claims = token::verify(&cfg.secret, &token, unix_now()).map_err(|e| {
            let code = match e {
                TokenError::Expired { .. } => ErrorCode::TokenExpired,
                _ => ErrorCode::BadToken,
            };
            Some(Fatal::new(code, e.to_string()))
        })?;
        claims.user.into()
    };
    let bad_signature = || {
        Some(Fatal::new(
            ErrorCode::BadSignature,
            "the challenge signature does not verify for this device id",
        ))
    };
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(&signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(bad_signature)?;
    device
        .verify(&hello_payload(&nonce, &token), &sig)
        .map_err(|_| bad_signature())?;

    tracing::Span::current().record("device", device.short().as_str());
    let me = Member {
        device,
        user,
        anonymous,
        ip,
        label: label.into(),
        handle: handle.clone(),
    };
    let limits = Limits {
        max_frame: u32::try_from(cfg.max_frame).unwrap_or(u32::MAX),
        control_rate: cfg.control_rate,
        ping_interval_ms: u64::try_from(cfg.ping_interval.as_millis()).unwrap_or(u64::MAX),
        idle_timeout_ms: u64::try_from(cfg.idle_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    if let Some(cluster) = hub.cluster.get() {
        Box::pin(cluster.join(&me)).await;
    }
    let registered = hub.register(&me, |peers| ServerMessage::Welcome {
        device,
        // Anonymous devices have no user: the welcome says "".
        user: if anonymous {
            String::new()
        } else {
            me.user.to_string()
        },
        peers,
        limits,
        ice_servers: hub.config.ice_servers.clone(),
    });
    if let Err(fatal) = registered {
        // Not admitted after all: the cluster forgets it too.
        if let Some(cluster) = hub.cluster.get() {
            Box::pin(cluster.leave(&me)).await;
        }
        return Err(Some(fatal));
    }
    if anonymous {
        tracing::info!(label = %me.label, %ip, "anonymous device online");
    } else {
        tracing::info!(user = %me.user, label = %me.label, "device online");
    }
    Ok(me)
}

/// Serves an admitted connection until it ends; returns the error to close with.
async fn read_loop(
    hub: &Arc<Hub>,
    me: &Member,
    stream: &mut SplitStream<Socket>,
    stop: &mut Stop,
) -> Option<Fatal> {
    let cfg = &hub.config;
    let mut last_seen = Instant::now();
    let mut control = TokenBucket::new(cfg.control_rate, cfg.control_burst, last_seen);
    let mut relay = TokenBucket::new(cfg.relay_rate, (cfg.relay_rate / 10).max(1), last_seen);
    let mut violations: u64 = 0;
    let mut refused = None;
    let max_violations = 4 * u64::from(cfg.control_burst.max(1));
    loop {
        let msg = tokio::select! {
            biased;
            f = stop.wait() => return Some(f),
            _ = sleep_until(last_seen + cfg.idle_timeout) => return Some(Fatal::new(
                ErrorCode::IdleTimeout,
                "the connection was silent past the idle time-out",
            )),
            m = stream.next() => m,
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::debug!("read error: {e}");
                return None;
            }
            None => return None,
        };
        let now = Instant::now();
        last_seen = now;
        match msg {
            Message::Text(text) => {
                if !control.try_take(now) {
                    violations += 1;
                    if violations > max_violations {
                        return Some(Fatal::new(
                            ErrorCode::RateLimited,
                            "too many control messages, persistently: closing",
                        ));
                    }
                    // Answer the request it carried, so its sender fails at once.
                    let req = ClientMessage::decode(text.as_str())
                        .ok()
                        .and_then(|m| m.req());
                    hub.send_error(
                        &me.handle,
                        req,
                        None,
                        ErrorCode::RateLimited,
                        "too many control messages: this one was dropped",
                    );
                    continue;
                }
                if control.is_full() {
                    violations = 0;
                }
                match ClientMessage::decode(text.as_str()) {
                    Ok(m) => match hub.cluster.get() {
                        Some(cluster) => Box::pin(cluster.control(me, m, text.as_str())).await,
                        None => hub.control(me, m),
                    },
                    Err(e) if e.code().is_fatal() => {
                        return Some(Fatal::new(e.code(), e.to_string()));
                    }
                    Err(e) => {
                        hub.send_error(&me.handle, None, None, e.code(), &e.to_string());
                    }
                }
            }
            Message::Binary(frame) => {
                if frame.len() > cfg.max_frame {
                    return Some(Fatal::new(
                        ErrorCode::FrameTooLarge,
                        format!(
                            "binary frame of {} bytes exceeds the limit of {}",
                            frame.len(),
                            cfg.max_frame
                        ),
                    ));
                }
                // Every binary frame counts toward the relay rate, a refused one too.
                if let Some(wait) = relay.take_shaped(Instant::now()) {
                    tokio::select! {
                        biased;
                        f = stop.wait() => return Some(f),
                        _ = sleep(wait) => {}
                    }
                }
                // A frame of a session that lives on another node goes there.
                if let Some(link) = hub.cluster.get().and_then(|c| c.route_away(me, &frame)) {
                    link.push_wait(&Frame::RelayFrom {
                        conn: me.handle.conn,
                        frame,
                    })
                    .await;
                    continue;
                }
                forward(hub, me, frame, &mut refused);
            }
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// Forwards one relay frame without waiting: never for the receiver. A frame
/// that does not fit the receiver's queue for its session ends that session
/// (and only it). Not `async`, so that its state is no part of the reader's,
/// which lives as long as the connection.
fn forward(hub: &Arc<Hub>, me: &Member, frame: Bytes, refused: &mut Option<SessionId>) {
    let header = match RelayHeader::peek(&frame) {
        Ok(h) => h,
        Err(e) => {
            if *refused != Some(BAD_HEADER) {
                *refused = Some(BAD_HEADER);
                hub.send_error(
                    &me.handle,
                    None,
                    None,
                    ErrorCode::BadRequest,
                    &e.to_string(),
                );
            }
            return;
        }
    };
    if !hub.relay(me, header.session, frame) {
        // One error per run of refused frames: a sender still streaming into a
        // session that just closed must not flood its own control queue.
        if *refused != Some(header.session) {
            *refused = Some(header.session);
            hub.send_error(
                &me.handle,
                None,
                Some(header.session),
                ErrorCode::Forbidden,
                "no established session of this connection has this id",
            );
        }
        return;
    }
    *refused = None;
}

pub(crate) type Sink = SplitSink<Socket, Message>;

/// Frames written per flush at most.
const WRITE_BATCH: usize = 64;

fn data_message(item: Data) -> Message {
    match item {
        Data::Relay(frame) => Message::Binary(frame),
        Data::Closed(text) => Message::Text(Utf8Bytes::from(text)),
    }
}

/// What a connection's writer sends, in this order of precedence.
struct Queues {
    ctrl: Arc<ControlQueue>,
    presence: Arc<Outbox>,
    relay: Arc<RelayQueue>,
}

impl Queues {
    /// The next frame already waiting, if any.
    fn try_next(&mut self) -> Option<Message> {
        if let Some(text) = self.ctrl.take() {
            return Some(Message::Text(Utf8Bytes::from(text)));
        }
        if let Some(news) = self.presence.take() {
            return Some(Message::Text(Utf8Bytes::from(news.encode())));
        }
        self.relay.take().map(data_message)
    }
}

/// The writer's clocks.
struct WriterTiming {
    /// How often to ping.
    ping_interval: Duration,
    /// How long one write may make no progress before the connection is a
    /// slow consumer.
    stall: Duration,
}

/// Why a write did not complete.
enum WriteEnd {
    /// The socket took nothing for the stall time-out.
    Stalled,
    /// The socket failed.
    Failed(WsError),
}

/// Runs one sink operation within the stall time-out.
async fn step(
    stall: Duration,
    op: impl std::future::Future<Output = Result<(), WsError>>,
) -> Result<(), WriteEnd> {
    match timeout(stall, op).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WriteEnd::Failed(e)),
        Err(_) => Err(WriteEnd::Stalled),
    }
}

/// Writes control frames first, then presence news, then relayed data, plus
/// pings, until told to finish; then sends the control frames still queued, the
/// last error (if any) and a close frame. A write that makes no progress for
/// the stall time-out closes this connection (`me`) as a slow consumer: only
/// this connection, whose peer stopped reading.
async fn write_loop(
    mut sink: Sink,
    mut q: Queues,
    mut finish: oneshot::Receiver<Option<(ErrorCode, String)>>,
    timing: WriterTiming,
    me: Handle,
) {
    let WriterTiming {
        ping_interval,
        stall,
    } = timing;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let last = loop {
        let msg = tokio::select! {
            biased;
            f = &mut finish => break f.ok().flatten(),
            () = q.ctrl.ready() => match q.ctrl.take() {
                Some(text) => Message::Text(Utf8Bytes::from(text)),
                None => continue,
            },
            () = q.presence.ready() => match q.presence.take() {
                Some(news) => Message::Text(Utf8Bytes::from(news.encode())),
                None => continue,
            },
            () = q.relay.ready() => match q.relay.take() {
                Some(item) => data_message(item),
                None => continue,
            },
            _ = ping.tick() => Message::Ping(Bytes::new()),
        };
        // Feed what is already queued behind it and flush once: few writes for
        // many small frames, no added delay for a lone one.
        let write = async {
            step(stall, sink.feed(msg)).await?;
            for _ in 0..WRITE_BATCH {
                let Some(next) = q.try_next() else { break };
                step(stall, sink.feed(next)).await?;
            }
            step(stall, sink.flush()).await
        };
        // A blocked write is abandoned on finish: the frame stays in the WebSocket's
        // buffer and goes out first if the socket drains within the grace.
        tokio::select! {
            biased;
            f = &mut finish => break f.ok().flatten(),
            r = write => match r {
                Ok(()) => {}
                Err(WriteEnd::Failed(e)) => {
                    tracing::debug!("write error: {e}");
                    return;
                }
                Err(WriteEnd::Stalled) => {
                    tracing::info!("the device does not read: disconnecting it");
                    me.kill(Fatal::new(
                        ErrorCode::SlowConsumer,
                        "this connection did not read relayed data in time",
                    ));
                    break (&mut finish).await.ok().flatten();
                }
            },
        }
    };
    let close = async {
        let (code, reason) = match &last {
            None => (1000, "bye"),
            Some((ErrorCode::ShuttingDown, _)) => (1001, "shutting_down"),
            Some((ErrorCode::FrameTooLarge, _)) => (1009, "frame_too_large"),
            Some((code, _)) => (1008, code.as_str()),
        };
        // Control frames queued before the end still go out (data does not).
        while let Some(text) = q.ctrl.take() {
            sink.send(Message::Text(Utf8Bytes::from(text))).await?;
        }
        if let Some((_, text)) = &last {
            sink.send(Message::Text(Utf8Bytes::from(text.as_str())))
                .await?;
        }
        sink.send(Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: Utf8Bytes::from(reason),
        })))
        .await
    };
    if let Ok(Err(e)) = timeout(CLOSE_GRACE, close).await {
        tracing::debug!("closing: {e}");
    }
}
