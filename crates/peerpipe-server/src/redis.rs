//! A small async Redis client: one connection, shared by every caller.
//!
//! [`Redis::open`] parses a `redis://` URL; the first call spawns one driver
//! task that owns one TCP connection and multiplexes every clone's commands
//! over it. Callers hand it encoded commands through a bounded queue; the driver
//! writes whatever is queued in one write, keeps a FIFO of the callers waiting
//! for replies, and answers them in order as replies are decoded
//! ([`peerpipe_proto::resp::decode`]).
//!
//! Failures are contained: a lost connection or a malformed reply fails every
//! request in flight ([`RedisError::Io`], [`RedisError::Protocol`]) and drops the
//! connection; the next request connects again, at most once every
//! [`RECONNECT_INTERVAL`], each attempt bounded by [`CONNECT_TIMEOUT`], and
//! requests between attempts fail at once ([`RedisError::Unavailable`]). Every
//! call has a time-out ([`Redis::with_timeout`]); a reply that comes after it is
//! read and dropped, so the replies stay paired with their requests. A connection
//! with requests in flight that receives nothing for [`STALL_LIMIT`] is deemed
//! dead. Each new connection sends `AUTH` and `SELECT` from the URL before
//! anything else and bumps [`Redis::connections`], so that state kept in Redis
//! can be registered again after a restart of the server.
//!
//! The pairing of replies with requests rules out commands that change it:
//! `SUBSCRIBE` and the other pub/sub commands, `MONITOR`, `HELLO`, `RESET`,
//! `QUIT`, `CLIENT REPLY`, `SYNC`, `PSYNC` are refused, as are `AUTH` and
//! `SELECT` (a reconnection would forget them: put them in the URL). The
//! connection is shared, so a transaction (`MULTI` ... `EXEC`, `WATCH`) must be
//! sent as one [`Redis::pipeline`], and a blocking command (`BLPOP`) holds up
//! every caller while it waits.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use peerpipe_proto::resp::{self, Reply};

/// The port of a URL without one.
const DEFAULT_PORT: u16 = 6379;
/// How long a call waits for its reply unless [`Redis::with_timeout`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection attempt (TCP, `AUTH`, `SELECT`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The least time between two connection attempts.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(200);
/// How long a connection with requests in flight may receive nothing before it
/// is dropped as dead (a server that vanished without closing it).
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Requests queued for the driver, not yet written.
const QUEUE: usize = 1024;
/// Requests written and waiting for their replies; the queue fills beyond it.
const MAX_IN_FLIGHT: usize = 4096;
/// Bytes of requests gathered into one write (one request may be larger).
const MAX_BATCH: usize = 1024 * 1024;
/// The largest reply, as bytes buffered before it is complete.
const MAX_REPLY: usize = 2 * resp::MAX_BULK_LEN;
/// The least room made in the read buffer before a read.
const READ_CHUNK: usize = 16 * 1024;

/// Commands that break the pairing of one reply per command, or set connection
/// state that a reconnection would lose, with what to do instead.
const REFUSED: &[(&str, &str)] = &[
    ("SUBSCRIBE", "pub/sub needs a connection of its own"),
    ("PSUBSCRIBE", "pub/sub needs a connection of its own"),
    ("SSUBSCRIBE", "pub/sub needs a connection of its own"),
    ("UNSUBSCRIBE", "pub/sub needs a connection of its own"),
    ("PUNSUBSCRIBE", "pub/sub needs a connection of its own"),
    ("SUNSUBSCRIBE", "pub/sub needs a connection of its own"),
    ("MONITOR", "it needs a connection of its own"),
    ("SYNC", "it needs a connection of its own"),
    ("PSYNC", "it needs a connection of its own"),
    ("HELLO", "this client speaks RESP2 only"),
    ("RESET", "it would drop the URL's AUTH and SELECT"),
    ("QUIT", "drop every handle to close the connection"),
    ("AUTH", "put the credentials in the URL"),
    ("SELECT", "put the database in the URL: redis://host/2"),
];

/// Why a Redis call failed. Messages name the server and say what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RedisError {
    /// The URL given to [`Redis::open`] is not `redis://[[user]:password@]host[:port][/db]`.
    #[error("invalid redis URL: {0}")]
    Url(String),
    /// There is no connection and none could be made just now: refused,
    /// unreachable, or the credentials or database of the URL were refused.
    /// Requests fail with this at once until the next attempt is due.
    #[error("{0}")]
    Unavailable(String),
    /// The connection failed or was closed while this request was in flight; the
    /// command may or may not have run.
    #[error("{0}")]
    Io(String),
    /// No reply within the call's time-out; the command may still run.
    #[error("redis did not answer in time")]
    Timeout,
    /// The server sent something that is not RESP2 (the connection was dropped),
    /// or the command cannot be sent through this client.
    #[error("{0}")]
    Protocol(String),
    /// The server answered the command with an error reply (`ERR ...`).
    #[error("redis answered with an error: {0}")]
    Server(String),
}

/// A handle to one Redis server. Cheap to clone: every clone shares one
/// connection and one driver task, which ends when the last clone is dropped.
///
/// Calls must be made inside a tokio runtime; the first one spawns the driver
/// on it (so that runtime must outlive the handle's use).
#[derive(Clone)]
pub(crate) struct Redis {
    shared: Arc<Shared>,
    timeout: Duration,
}

/// What the clones of a [`Redis`] share.
struct Shared {
    /// The driver's queue.
    requests: mpsc::Sender<Request>,
    /// The number of connections made so far.
    connections: watch::Receiver<u64>,
    /// The URL without the password.
    display: String,
    /// The driver, until the first call spawns it.
    driver: Mutex<Option<Driver>>,
    /// Set once the driver is spawned.
    started: OnceLock<()>,
}

/// Commands for the driver: their encoding, how many replies they take, and
/// where the replies go.
struct Request {
    bytes: Vec<u8>,
    replies: usize,
    done: oneshot::Sender<Result<Vec<Reply>, RedisError>>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.shared.display)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Redis {
    /// A handle for the server at `url`, `redis://[[user]:password@]host[:port][/db]`
    /// (port 6379 by default; the host a name, an IPv4 address or an
    /// `[IPv6]` address; user and password may be percent-encoded). Does not
    /// connect: the first call does.
    pub(crate) fn open(url: &str) -> Result<Redis, RedisError> {
        let target = Target::parse(url)?;
        let display = target.url_for_display();
        let (requests, inbox) = mpsc::channel(QUEUE);
        let (connections_tx, connections) = watch::channel(0);
        let driver = Driver {
            target,
            inbox,
            connections: connections_tx,
        };
        Ok(Redis {
            shared: Arc::new(Shared {
                requests,
                connections,
                display,
                driver: Mutex::new(Some(driver)),
                started: OnceLock::new(),
            }),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// This handle with calls timing out after `timeout` rather than 2 s (other
    /// clones keep theirs). A connection that receives nothing for 10 s while
    /// replies are due is dropped whatever the time-out.
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs one command, `args` being its name and arguments, and returns its
    /// reply; an error reply is [`RedisError::Server`].
    pub(crate) async fn query(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        check(args)?;
        let mut bytes = Vec::new();
        resp::encode_command(args, &mut bytes);
        let mut replies = self.call(bytes, 1).await?;
        match replies.pop() {
            Some(Reply::Error(message)) => Err(RedisError::Server(message)),
            Some(reply) if replies.is_empty() => Ok(reply),
            _ => Err(RedisError::Protocol(format!(
                "{} answered one command with other than one reply",
                self.shared.display
            ))),
        }
    }

    /// Runs several commands, written together, and returns their replies in
    /// order. Error replies stay in the list as [`Reply::Error`]; the call fails
    /// as a whole only if the connection does (or on time-out).
    pub(crate) async fn pipeline(&self, cmds: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, RedisError> {
        let mut bytes = Vec::new();
        for cmd in cmds {
            let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
            check(&args)?;
            resp::encode_command(&args, &mut bytes);
        }
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.call(bytes, cmds.len()).await?;
        if replies.len() != cmds.len() {
            return Err(RedisError::Protocol(format!(
                "{} answered {} commands with {} replies",
                self.shared.display,
                cmds.len(),
                replies.len()
            )));
        }
        Ok(replies)
    }

    /// The number of connections made to the server so far, from 0 before the
    /// first call. It goes up by one each time a connection is made (after
    /// `AUTH` and `SELECT`): after a restart of the server, state kept in it
    /// must be registered again. `changed()` on the receiver waits for the next.
    pub(crate) fn connections(&self) -> watch::Receiver<u64> {
        let mut connections = self.shared.connections.clone();
        connections.mark_unchanged();
        connections
    }

    /// The URL, without the password: for logs and error messages.
    pub(crate) fn url_for_display(&self) -> String {
        self.shared.display.clone()
    }

    /// Sends `bytes`, which hold `replies` commands, and waits for their replies.
    async fn call(&self, bytes: Vec<u8>, replies: usize) -> Result<Vec<Reply>, RedisError> {
        self.shared.started.get_or_init(|| {
            let driver = self
                .shared
                .driver
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(driver) = driver {
                tokio::spawn(driver.run());
            }
        });
        let stopped = || RedisError::Unavailable("the redis client's task has stopped".into());
        let (done, answer) = oneshot::channel();
        let request = Request {
            bytes,
            replies,
            done,
        };
        let exchange = async {
            self.shared
                .requests
                .send(request)
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(RedisError::Timeout))
    }
}

/// Refuses an empty command (Redis ignores it, without a reply) and the
/// commands of [`REFUSED`].
fn check(args: &[&[u8]]) -> Result<(), RedisError> {
    let Some(name) = args.first() else {
        return Err(RedisError::Protocol(
            "an empty command (no name, no arguments) cannot be sent".into(),
        ));
    };
    let refused = REFUSED
        .iter()
        .find(|(refused, _)| name.eq_ignore_ascii_case(refused.as_bytes()));
    let client_reply = name.eq_ignore_ascii_case(b"CLIENT")
        && args
            .get(1)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"REPLY"));
    match refused {
        Some((name, why)) => Err(RedisError::Protocol(format!(
            "{name} is not supported by this client: {why}"
        ))),
        None if client_reply => Err(RedisError::Protocol(
            "CLIENT REPLY is not supported by this client: every command needs its reply".into(),
        )),
        None => Ok(()),
    }
}

/// Where to connect and how to log in, from the URL.
struct Target {
    /// A name or an address, IPv6 without brackets.
    host: String,
    port: u16,
    user: Option<Vec<u8>>,
    password: Option<Vec<u8>>,
    db: Option<u32>,
}

impl Target {
    fn parse(url: &str) -> Result<Target, RedisError> {
        let bad = |why: &str| {
            RedisError::Url(format!(
                "{why} (expected redis://[[user]:password@]host[:port][/db])"
            ))
        };
        let Some(rest) = url.strip_prefix("redis://") else {
            return Err(if url.starts_with("rediss://") {
                bad("TLS (rediss://) is not supported")
            } else {
                bad("it must start with redis://")
            });
        };
        // The password may hold '@', '/' or ':': the host part is after the last '@'.
        let (userinfo, rest) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let Some((user, password)) = info.split_once(':') else {
                    return Err(bad(
                        "the part before '@' must be user:password or :password",
                    ));
                };
                let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
                let password =
                    percent_decode(password).ok_or_else(|| bad("bad %-escape in the password"))?;
                ((!user.is_empty()).then_some(user), Some(password))
            }
        };
        if rest.contains(['?', '#']) {
            return Err(bad("query strings and fragments are not supported"));
        }
        let (authority, db) = match rest.split_once('/') {
            None => (rest, None),
            Some((authority, "")) => (authority, None),
            Some((authority, db)) => match db.parse::<u32>() {
                Ok(n) if db.bytes().all(|b| b.is_ascii_digit()) => (authority, Some(n)),
                _ => return Err(bad("the database must be a number, as in redis://host/2")),
            },
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((v6, after)) = bracketed.split_once(']') else {
                return Err(bad("an IPv6 address needs its closing ']'"));
            };
            if v6.parse::<Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address between '[' and ']'"));
            }
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(port),
                    None => return Err(bad("only :port may follow ']'")),
                },
            };
            (v6, port)
        } else if authority.matches(':').count() > 1 {
            return Err(bad(
                "an IPv6 address must be in brackets, as in redis://[::1]:6379",
            ));
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let v6 = authority.starts_with('[');
        if !v6
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(bad("the host must be a name or an IP address"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => match port.parse::<u16>() {
                Ok(n) if n != 0 && port.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        Ok(Target {
            host: host.to_owned(),
            port,
            user,
            password,
            db,
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn url_for_display(&self) -> String {
        let user = match &self.user {
            Some(user) => format!("{}@", String::from_utf8_lossy(user)),
            None => String::new(),
        };
        let db = match self.db {
            Some(db) => format!("/{db}"),
            None => String::new(),
        };
        format!("redis://{user}{}{db}", self.addr())
    }
}

impl fmt::Display for Target {
    /// "redis at host:port", for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis at {}", self.addr())
    }
}

/// `%XX` escapes decoded; `None` if one is malformed.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// An I/O error as a short phrase: "connection refused" rather than
/// "Connection refused (os error 111)".
fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::from("unknown error"),
    }
}

/// The driver task's state: it owns the queue's receiving end, and the
/// connection while there is one.
struct Driver {
    target: Target,
    inbox: mpsc::Receiver<Request>,
    connections: watch::Sender<u64>,
}

/// A request written, waiting for its replies.
struct Pending {
    /// Replies still to come.
    left: usize,
    replies: Vec<Reply>,
    done: oneshot::Sender<Result<Vec<Reply>, RedisError>>,
    /// When it was written (or queued for writing).
    since: Instant,
}

/// One connection, after its handshake.
struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    read: BytesMut,
}

impl Driver {
    /// Serves requests until every [`Redis`] clone is gone: connects on the
    /// first request, serves until the connection fails, and connects again on
    /// the next request once [`RECONNECT_INTERVAL`] has passed since the last
    /// attempt; requests before then fail at once.
    async fn run(mut self) {
        let mut last_attempt: Option<Instant> = None;
        // Why there is no connection, for the requests that find none.
        let mut down = format!("{} is not connected yet", self.target);
        // Whether the current outage has been logged.
        let mut logged = false;
        while let Some(first) = self.inbox.recv().await {
            if first.done.is_closed() {
                continue;
            }
            if last_attempt.is_some_and(|at| at.elapsed() < RECONNECT_INTERVAL) {
                let _ = first.done.send(Err(RedisError::Unavailable(down.clone())));
                continue;
            }
            last_attempt = Some(Instant::now());
            match self.connect().await {
                Ok(connection) => {
                    let count = {
                        self.connections.send_modify(|n| *n += 1);
                        *self.connections.borrow()
                    };
                    tracing::info!(redis = %self.target.url_for_display(), connection = count, "connected to redis");
                    match self.serve(connection, first).await {
                        Some(why) => {
                            tracing::warn!("{why}");
                            logged = true;
                            down = why;
                        }
                        None => return,
                    }
                }
                Err(why) => {
                    if logged {
                        tracing::debug!("{why}");
                    } else {
                        tracing::warn!("{why}");
                        logged = true;
                    }
                    let _ = first.done.send(Err(RedisError::Unavailable(why.clone())));
                    down = why;
                }
            }
        }
    }

    /// Connects and logs in, within [`CONNECT_TIMEOUT`]; the error says why not.
    async fn connect(&self) -> Result<Connection, String> {
        let target = &self.target;
        let attempt = async {
            let stream = TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(|e| format!("{target} is unreachable: {}", describe(&e)))?;
            stream
                .set_nodelay(true)
                .map_err(|e| format!("{target}: cannot set TCP_NODELAY: {}", describe(&e)))?;
            let mut connection = Connection {
                stream,
                read: BytesMut::with_capacity(READ_CHUNK),
            };
            self.handshake(&mut connection).await?;
            Ok(connection)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{target} is unreachable: no connection within {} s",
                CONNECT_TIMEOUT.as_secs_f32()
            )),
        }
    }

    /// Sends `AUTH` and `SELECT` as the URL asks, and checks their replies.
    async fn handshake(&self, connection: &mut Connection) -> Result<(), String> {
        let target = &self.target;
        let mut out = Vec::new();
        let mut steps = Vec::new();
        if let Some(password) = &target.password {
            match &target.user {
                Some(user) => resp::encode_command(&[b"AUTH", user, password], &mut out),
                None => resp::encode_command(&[b"AUTH", password], &mut out),
            }
            steps.push("the credentials of the URL (AUTH)".to_owned());
        }
        if let Some(db) = target.db {
            resp::encode_command(&[b"SELECT", db.to_string().as_bytes()], &mut out);
            steps.push(format!("database {db} (SELECT)"));
        }
        if out.is_empty() {
            return Ok(());
        }
        connection
            .stream
            .write_all(&out)
            .await
            .map_err(|e| format!("lost the connection to {target}: {}", describe(&e)))?;
        for step in steps {
            if let Reply::Error(message) = connection.read_reply(target).await? {
                return Err(format!("{target} refused {step}: {message}"));
            }
        }
        Ok(())
    }

    /// Serves requests on `connection`, `first` first, until it fails (`Some`
    /// with why, after failing every request in flight) or every handle is
    /// gone (`None`). Each turn: read and deliver replies, write what is
    /// gathered, or gather what is queued once the last write is done.
    async fn serve(&mut self, mut connection: Connection, first: Request) -> Option<String> {
        let mut pending = VecDeque::new();
        let mut out = BytesMut::new();
        let target = &self.target;
        let inbox = &mut self.inbox;
        enqueue(first, &mut out, &mut pending);
        gather(inbox, &mut out, &mut pending);
        let (mut reader, mut writer) = connection.stream.split();
        let read = &mut connection.read;
        let mut last_read = Instant::now();
        let failure = loop {
            if read.capacity() - read.len() < READ_CHUNK {
                // Larger reads as a long reply grows, for fewer attempts to decode it.
                read.reserve(READ_CHUNK.max(read.len()).min(MAX_BATCH));
            }
            let stalled_at = pending
                .front()
                .map(|p: &Pending| p.since.max(last_read) + STALL_LIMIT);
            tokio::select! {
                got = reader.read_buf(&mut *read) => match got {
                    Ok(0) => break RedisError::Io(format!("{target} closed the connection")),
                    Ok(_) => {
                        last_read = Instant::now();
                        if let Err(e) = deliver(read, &mut pending, target) {
                            break e;
                        }
                    }
                    Err(e) => break RedisError::Io(format!("lost the connection to {target}: {}", describe(&e))),
                },
                written = writer.write(&out[..]), if !out.is_empty() => match written {
                    Ok(0) => break RedisError::Io(format!("lost the connection to {target}: it takes no more bytes")),
                    Ok(n) => out.advance(n),
                    Err(e) => break RedisError::Io(format!("lost the connection to {target}: {}", describe(&e))),
                },
                request = inbox.recv(), if out.is_empty() && pending.len() < MAX_IN_FLIGHT => match request {
                    Some(request) => {
                        enqueue(request, &mut out, &mut pending);
                        gather(inbox, &mut out, &mut pending);
                    }
                    None => return None,
                },
                () = tokio::time::sleep_until(stalled_at.unwrap_or_else(Instant::now)), if stalled_at.is_some() => {
                    break RedisError::Io(format!(
                        "{target} sent nothing for {} s while replies were due",
                        STALL_LIMIT.as_secs()
                    ));
                }
            }
        };
        for p in pending {
            let _ = p.done.send(Err(failure.clone()));
        }
        Some(failure.to_string())
    }
}

impl Connection {
    /// Reads one reply (during the handshake, when nothing else is in flight).
    async fn read_reply(&mut self, target: &Target) -> Result<Reply, String> {
        loop {
            match resp::decode(&self.read) {
                Ok(Some((reply, used))) => {
                    self.read.advance(used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("{target} sent a malformed reply: {e}")),
            }
            self.read.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) => return Err(format!("{target} closed the connection")),
                Ok(_) => {}
                Err(e) => {
                    return Err(format!("lost the connection to {target}: {}", describe(&e)));
                }
            }
        }
    }
}

/// Appends a request to the bytes to write and to the FIFO, unless its caller
/// has given up already (then it is never sent, and the FIFO stays aligned).
fn enqueue(request: Request, out: &mut BytesMut, pending: &mut VecDeque<Pending>) {
    if request.done.is_closed() {
        return;
    }
    if request.replies == 0 {
        let _ = request.done.send(Ok(Vec::new()));
        return;
    }
    out.extend_from_slice(&request.bytes);
    pending.push_back(Pending {
        left: request.replies,
        replies: Vec::with_capacity(request.replies.min(1024)),
        done: request.done,
        since: Instant::now(),
    });
}

/// Moves the requests queued now into `out` and the FIFO, within
/// [`MAX_BATCH`] bytes and [`MAX_IN_FLIGHT`] requests.
fn gather(
    inbox: &mut mpsc::Receiver<Request>,
    out: &mut BytesMut,
    pending: &mut VecDeque<Pending>,
) {
    while out.len() < MAX_BATCH && pending.len() < MAX_IN_FLIGHT {
        match inbox.try_recv() {
            Ok(request) => enqueue(request, out, pending),
            Err(_) => break,
        }
    }
}

/// Decodes the complete replies in `read` and hands them to the requests at
/// the front of the FIFO, in order. A reply for a caller that gave up is
/// dropped.
fn deliver(
    read: &mut BytesMut,
    pending: &mut VecDeque<Pending>,
    target: &Target,
) -> Result<(), RedisError> {
    loop {
        let (reply, used) = match resp::decode(read) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => break,
            Err(e) => {
                return Err(RedisError::Protocol(format!(
                    "{target} sent a malformed reply: {e}"
                )));
            }
        };
        read.advance(used);
        let Some(front) = pending.front_mut() else {
            return Err(RedisError::Protocol(format!(
                "{target} sent a reply to no request"
            )));
        };
        if !front.done.is_closed() {
            front.replies.push(reply);
        }
        front.left = front.left.saturating_sub(1);
        if front.left == 0
            && let Some(done) = pending.pop_front()
        {
            let _ = done.done.send(Ok(done.replies));
        }
    }
    if read.len() > MAX_REPLY {
        return Err(RedisError::Protocol(format!(
            "{target} sent a reply of more than {} MiB",
            MAX_REPLY >> 20
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{Read as _, Write as _};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};

    use bytes::Bytes;

    fn cmd(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn urls() {
        let t = Target::parse("redis://localhost").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user, t.password, t.db),
            ("localhost", 6379, None, None, None)
        );
        let t = Target::parse("redis://:pa%40ss@10.0.0.1:7000/3").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("10.0.0.1", 7000, Some(3)));
        assert_eq!((t.user, t.password), (None, Some(b"pa@ss".to_vec())));
        let t = Target::parse("redis://alice:p@ss:w/rd@[::1]:6380/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("::1", 6380, None));
        assert_eq!(t.user.as_deref(), Some(&b"alice"[..]));
        assert_eq!(t.password.as_deref(), Some(&b"p@ss:w/rd"[..]));
        assert_eq!(t.url_for_display(), "redis://alice@[::1]:6380");
        assert_eq!(t.to_string(), "redis at [::1]:6380");
        let t = Target::parse("redis://[fe80::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fe80::1", 6379));
        let t = Target::parse("redis://redis-0.redis.svc_x:1/15").unwrap();
        assert_eq!(t.url_for_display(), "redis://redis-0.redis.svc_x:1/15");

        for bad in [
            "",
            "http://localhost",
            "rediss://localhost",
            "redis://",
            "redis://:6379",
            "redis://host:",
            "redis://host:0",
            "redis://host:65536",
            "redis://host:+1",
            "redis://host/x",
            "redis://host/-1",
            "redis://host/1/2",
            "redis://host?db=1",
            "redis://::1",
            "redis://[::1",
            "redis://[nope]",
            "redis://[::1]x",
            "redis://pass@host",
            "redis://:bad%zz@host",
            "redis://:bad%4@host",
            "redis://ho st",
        ] {
            let e = Target::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(matches!(e, RedisError::Url(_)), "{bad:?}: {e}");
        }
        let e = Target::parse("redis://::1").err().unwrap();
        assert!(e.to_string().contains("brackets"), "{e}");
    }

    #[test]
    fn display_hides_the_password() {
        let r = Redis::open("redis://bob:hunter2@example.com/2").unwrap();
        assert_eq!(r.url_for_display(), "redis://bob@example.com:6379/2");
        assert!(!format!("{r:?}").contains("hunter2"));
        let r = Redis::open("redis://:hunter2@example.com").unwrap();
        assert_eq!(r.url_for_display(), "redis://example.com:6379");
    }

    #[tokio::test]
    async fn commands_that_break_the_pairing_are_refused() {
        // Nothing listens there: refusals come before any connection.
        let r = Redis::open("redis://127.0.0.1:1").unwrap();
        for args in [
            &[&b"subscribe"[..], b"news"][..],
            &[b"HELLO", b"3"],
            &[b"client", b"reply", b"off"],
            &[b"SELECT", b"1"],
            &[],
        ] {
            let e = r.query(args).await.unwrap_err();
            assert!(matches!(e, RedisError::Protocol(_)), "{e}");
        }
        let e = r
            .pipeline(&[cmd(&["PING"]), cmd(&["MONITOR"])])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("MONITOR"), "{e}");
        assert_eq!(r.pipeline(&[]).await, Ok(vec![]));
        assert_eq!(*r.connections().borrow(), 0);
    }

    #[tokio::test]
    async fn unreachable_fails_fast_and_clearly() {
        let port = free_port();
        let r = Redis::open(&format!("redis://127.0.0.1:{port}")).unwrap();
        let started = std::time::Instant::now();
        let e = r.query(&[b"PING"]).await.unwrap_err();
        assert_eq!(
            e,
            RedisError::Unavailable(format!(
                "redis at 127.0.0.1:{port} is unreachable: connection refused"
            ))
        );
        // Within the back-off, at once and with the same reason.
        let again = r.query(&[b"PING"]).await.unwrap_err();
        assert_eq!(again, e);
        assert!(started.elapsed() < Duration::from_millis(150));
    }

    /// A fake server: answers each command only when the test says so.
    #[tokio::test]
    async fn late_replies_go_to_nobody_and_the_next_gets_its_own() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (go, mut went) = mpsc::channel::<&'static [u8]>(8);
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut sink = [0u8; 1024];
            while let Some(reply) = went.recv().await {
                let _ = socket.read(&mut sink).await.unwrap();
                socket.write_all(reply).await.unwrap();
            }
        });
        let r = Redis::open(&format!("redis://127.0.0.1:{port}")).unwrap();
        let quick = r.clone().with_timeout(Duration::from_millis(50));
        assert_eq!(quick.query(&[b"GET", b"a"]).await, Err(RedisError::Timeout));
        go.send(b"$1\r\na\r\n").await.unwrap();
        go.send(b"$1\r\nb\r\n").await.unwrap();
        assert_eq!(r.query(&[b"GET", b"b"]).await, Ok(bulk("b")));
        drop(go);
        server.await.unwrap();
        // The fake server is gone: the connection is lost, then refused.
        let e = r.query(&[b"PING"]).await.unwrap_err();
        assert!(
            matches!(e, RedisError::Io(_) | RedisError::Unavailable(_)),
            "{e}"
        );
        assert_eq!(*r.connections().borrow(), 1);
    }

    #[tokio::test]
    async fn a_malformed_reply_fails_the_request_and_drops_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for reply in [&b"!oops\r\n"[..], b"+PONG\r\n"] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut sink = [0u8; 1024];
                let _ = socket.read(&mut sink).await.unwrap();
                socket.write_all(reply).await.unwrap();
                // Held open: only the client drops it.
                tokio::spawn(async move {
                    let _ = socket.read(&mut sink).await;
                });
            }
        });
        let r = Redis::open(&format!("redis://127.0.0.1:{port}")).unwrap();
        let e = r.query(&[b"PING"]).await.unwrap_err();
        assert_eq!(
            e,
            RedisError::Protocol(format!(
                "redis at 127.0.0.1:{port} sent a malformed reply: unknown RESP reply type byte 0x21"
            ))
        );
        // The connection was just made: the next attempt waits for the back-off.
        assert!(matches!(
            r.query(&[b"PING"]).await,
            Err(RedisError::Unavailable(_))
        ));
        tokio::time::sleep(RECONNECT_INTERVAL).await;
        assert_eq!(r.query(&[b"PING"]).await, Ok(Reply::Status("PONG".into())));
        assert_eq!(*r.connections().borrow(), 2);
    }

    #[tokio::test]
    async fn dropping_every_handle_ends_the_task() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = Redis::open(&format!("redis://127.0.0.1:{port}")).unwrap();
        let connections = r.connections();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = socket.read(&mut buf).await.unwrap();
            socket.write_all(b"+PONG\r\n").await.unwrap();
            // The client closes the connection when the last handle goes.
            while socket.read(&mut buf).await.unwrap() > 0 {}
        });
        let other = r.clone();
        assert_eq!(
            other.query(&[b"PING"]).await,
            Ok(Reply::Status("PONG".into()))
        );
        drop(r);
        drop(other);
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("connection closed")
            .unwrap();
        // The driver held the only sender of the counter.
        let mut connections = connections;
        assert_eq!(*connections.borrow_and_update(), 1);
        assert!(connections.changed().await.is_err());
    }

    // ---- Against a real redis-server ----

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// A redis-server of its own on a free port, stopped on drop.
    struct RedisServer {
        port: u16,
        dir: PathBuf,
        extra: Vec<String>,
        child: Option<Child>,
    }

    impl RedisServer {
        fn start(extra: &[&str]) -> RedisServer {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "peerpipe-redis-{port}-{:016x}",
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut server = RedisServer {
                port,
                dir,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
            };
            server.resume();
            server
        }

        /// Starts the server (again), on the same port, and waits until it answers.
        fn resume(&mut self) {
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&self.dir)
                .args(&self.extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs");
            self.child = Some(child);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !self.answers() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server did not answer within 5 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Whether a PING gets a reply (any: `-NOAUTH` counts).
        fn answers(&self) -> bool {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
            let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 64];
            s.write_all(b"PING\r\n").is_ok() && matches!(s.read(&mut buf), Ok(n) if n > 0)
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        fn url(&self, userinfo: &str, db: &str) -> String {
            format!("redis://{userinfo}127.0.0.1:{}{db}", self.port)
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn round_trips() {
        let server = RedisServer::start(&[]);
        let r = Redis::open(&server.url("", "")).unwrap();
        assert_eq!(
            r.query(&[b"SET", b"k", b"v"]).await,
            Ok(Reply::Status("OK".into()))
        );
        assert_eq!(r.query(&[b"GET", b"k"]).await, Ok(bulk("v")));
        assert_eq!(r.query(&[b"GET", b"missing"]).await, Ok(Reply::Nil));
        let binary: &[u8] = b"\0\r\n$-1\r\n\xff";
        assert_eq!(
            r.query(&[b"SET", b"bin", binary]).await,
            Ok(Reply::Status("OK".into()))
        );
        assert_eq!(
            r.query(&[b"GET", b"bin"]).await.unwrap().as_bytes(),
            Some(binary)
        );
        assert_eq!(r.query(&[b"INCR", b"n"]).await, Ok(Reply::Int(1)));
        assert_eq!(r.query(&[b"INCRBY", b"n", b"-5"]).await, Ok(Reply::Int(-4)));
        let script =
            b"return {KEYS[1], ARGV[1], tonumber(ARGV[2]) * 2, {redis.call('GET', KEYS[1])}}";
        assert_eq!(
            r.query(&[b"EVAL", script, b"1", b"k", b"arg", b"21"]).await,
            Ok(Reply::Array(vec![
                bulk("k"),
                bulk("arg"),
                Reply::Int(42),
                Reply::Array(vec![bulk("v")]),
            ]))
        );
        let e = r
            .query(&[b"EVAL", b"return redis.error_reply('ERR boom')", b"0"])
            .await
            .unwrap_err();
        assert_eq!(e, RedisError::Server("ERR boom".into()));
        let e = r.query(&[b"INCR", b"k"]).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "redis answered with an error: ERR value is not an integer or out of range"
        );
        let e = r.query(&[b"NOSUCHCOMMAND"]).await.unwrap_err();
        assert!(
            matches!(&e, RedisError::Server(m) if m.starts_with("ERR unknown command")),
            "{e}"
        );
        // Still in step after the errors.
        assert_eq!(r.query(&[b"ECHO", b"after"]).await, Ok(bulk("after")));
        assert_eq!(*r.connections().borrow(), 1);
    }

    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn a_pipeline_of_a_thousand() {
        let server = RedisServer::start(&[]);
        let r = Redis::open(&server.url("", "")).unwrap();
        let incrs: Vec<_> = (0..1000).map(|_| cmd(&["INCR", "counter"])).collect();
        let replies = r.pipeline(&incrs).await.unwrap();
        assert_eq!(replies, (1..=1000).map(Reply::Int).collect::<Vec<_>>());
        // Errors stay in place, with large values around them.
        let big = "x".repeat(100_000);
        let mixed = vec![
            cmd(&["SET", "big", &big]),
            cmd(&["INCR", "big"]),
            cmd(&["GET", "big"]),
            cmd(&["GET", "counter"]),
        ];
        let replies = r.pipeline(&mixed).await.unwrap();
        assert_eq!(replies[0], Reply::Status("OK".into()));
        assert!(
            matches!(&replies[1], Reply::Error(m) if m.starts_with("ERR value is not an integer"))
        );
        assert_eq!(replies[2], bulk(&big));
        assert_eq!(replies[3], bulk("1000"));
        // MULTI ... EXEC as one pipeline.
        let tx = vec![
            cmd(&["MULTI"]),
            cmd(&["INCR", "t"]),
            cmd(&["INCR", "t"]),
            cmd(&["EXEC"]),
        ];
        let replies = r.pipeline(&tx).await.unwrap();
        assert_eq!(replies[3], Reply::Array(vec![Reply::Int(1), Reply::Int(2)]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs redis-server"]
    async fn concurrent_callers_get_their_own_answers() {
        let server = RedisServer::start(&[]);
        let r = Redis::open(&server.url("", "")).unwrap();
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let r = r.clone();
                tokio::spawn(async move {
                    let key = format!("key:{i}");
                    let value = format!("value-{i}-{}", "v".repeat(i * 37));
                    for round in 0..20 {
                        let echo = format!("{i}/{round}");
                        assert_eq!(r.query(&[b"ECHO", echo.as_bytes()]).await, Ok(bulk(&echo)));
                    }
                    r.query(&[b"SET", key.as_bytes(), value.as_bytes()])
                        .await
                        .unwrap();
                    assert_eq!(r.query(&[b"GET", key.as_bytes()]).await, Ok(bulk(&value)));
                    let replies = r
                        .pipeline(&[cmd(&["INCR", "shared"]), cmd(&["STRLEN", &key])])
                        .await
                        .unwrap();
                    assert_eq!(replies[1], Reply::Int(value.len() as i64));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(r.query(&[b"GET", b"shared"]).await, Ok(bulk("100")));
        assert_eq!(*r.connections().borrow(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs redis-server"]
    async fn a_restarted_server_is_reconnected_to() {
        let mut server = RedisServer::start(&[]);
        let r = Redis::open(&server.url("", "/2")).unwrap();
        let mut connections = r.connections();
        assert_eq!(
            r.query(&[b"SET", b"k", b"1"]).await,
            Ok(Reply::Status("OK".into()))
        );
        assert_eq!(*connections.borrow_and_update(), 1);

        server.stop();
        let e = r.query(&[b"GET", b"k"]).await.unwrap_err();
        assert!(
            matches!(e, RedisError::Io(_) | RedisError::Unavailable(_)),
            "{e}"
        );
        // Fast failures, and after the back-off a refused attempt.
        let mut last = e;
        for _ in 0..6 {
            let started = Instant::now();
            last = r.query(&[b"GET", b"k"]).await.unwrap_err();
            assert!(matches!(last, RedisError::Unavailable(_)), "{last}");
            assert!(started.elapsed() < Duration::from_millis(100));
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        assert_eq!(
            last.to_string(),
            format!(
                "redis at 127.0.0.1:{} is unreachable: connection refused",
                server.port
            )
        );
        assert!(!connections.has_changed().unwrap());

        server.resume();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match r.query(&[b"SET", b"k", b"2"]).await {
                Ok(reply) => {
                    assert_eq!(reply, Reply::Status("OK".into()));
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "not back after 5 s: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        tokio::time::timeout(Duration::from_secs(1), connections.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*connections.borrow(), 2);
        // SELECT was sent again: the key is in database 2, not 0.
        let db0 = Redis::open(&server.url("", "")).unwrap();
        assert_eq!(db0.query(&[b"GET", b"k"]).await, Ok(Reply::Nil));
        assert_eq!(r.query(&[b"GET", b"k"]).await, Ok(bulk("2")));
    }

    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn passwords() {
        let server = RedisServer::start(&[
            "--requirepass",
            "s3cret",
            "--user",
            "alice",
            "on",
            ">wonder%land",
            "~*",
            "&*",
            "+@all",
        ]);
        let pong = Ok(Reply::Status("PONG".into()));
        let r = Redis::open(&server.url(":s3cret@", "")).unwrap();
        assert_eq!(r.query(&[b"PING"]).await, pong);
        let r = Redis::open(&server.url("default:s3cret@", "/1")).unwrap();
        assert_eq!(r.query(&[b"PING"]).await, pong);
        let r = Redis::open(&server.url("alice:wonder%25land@", "")).unwrap();
        assert_eq!(r.query(&[b"ACL", b"WHOAMI"]).await, Ok(bulk("alice")));

        let wrong = Redis::open(&server.url(":nope@", "")).unwrap();
        let e = wrong.query(&[b"PING"]).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "redis at 127.0.0.1:{} refused the credentials of the URL (AUTH): \
                 WRONGPASS invalid username-password pair or user is disabled.",
                server.port
            )
        );
        assert!(matches!(e, RedisError::Unavailable(_)));
        assert_eq!(*wrong.connections().borrow(), 0);

        let none = Redis::open(&server.url("", "")).unwrap();
        let e = none.query(&[b"PING"]).await.unwrap_err();
        assert!(
            matches!(&e, RedisError::Server(m) if m.starts_with("NOAUTH")),
            "{e}"
        );

        let bad_db = Redis::open(&server.url(":s3cret@", "/99")).unwrap();
        let e = bad_db.query(&[b"PING"]).await.unwrap_err();
        assert!(
            e.to_string().contains("refused database 99 (SELECT)"),
            "{e}"
        );
    }

    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn a_time_out_leaves_the_replies_in_step() {
        let server = RedisServer::start(&["--enable-debug-command", "local"]);
        let r = Redis::open(&server.url("", "")).unwrap();
        let quick = r.clone().with_timeout(Duration::from_millis(100));
        assert_eq!(
            quick.query(&[b"SET", b"k", b"v"]).await,
            Ok(Reply::Status("OK".into()))
        );
        let started = Instant::now();
        assert_eq!(
            quick.query(&[b"DEBUG", b"SLEEP", b"0.5"]).await,
            Err(RedisError::Timeout)
        );
        assert!(started.elapsed() < Duration::from_millis(300));
        // Queued behind the sleep: timed out too, written or not.
        let e = quick
            .pipeline(&[cmd(&["ECHO", "lost"]), cmd(&["ECHO", "lost"])])
            .await;
        assert_eq!(e, Err(RedisError::Timeout));
        // The late replies go to nobody; this gets its own.
        assert_eq!(r.query(&[b"GET", b"k"]).await, Ok(bulk("v")));
        assert_eq!(quick.query(&[b"ECHO", b"mine"]).await, Ok(bulk("mine")));
        assert_eq!(*r.connections().borrow(), 1);
    }
}
