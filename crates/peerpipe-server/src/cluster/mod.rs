//! One node of a cluster of server nodes sharing a Redis (`--redis`).
//!
//! Every node admits any device, and keeps the hub's rules as a single
//! server does; what the nodes share is small:
//!
//! - **Nodes.** Each node has a random 32-bit id, registered with its link
//!   address in Redis, and a heartbeat (a sorted set scored by Redis's own
//!   clock, every second). A node missing from it for [`LEASE`] is gone: its
//!   devices go offline on every node, without any command per device.
//! - **Presence.** A hash per user (device → node, connection, label) and one
//!   hash of every device (device → node, connection). A device admitted
//!   writes its entry and reads its user's in one script; it learns the
//!   user's devices of other nodes from it, and those nodes learn of it over
//!   their links ([`Frame::Joined`]). A node stands in for each connection of
//!   another node it knows of with a [`Member`] whose [`Handle`] sends to that
//!   node, so the hub's presence, sessions and codes work unchanged.
//! - **Where things live.** A session lives on the node that took its
//!   `connect` (the target's: a target's allowances to resume are there), and
//!   its id carries that node's id in its high 32 bits; a code lives on the
//!   node of the device that allocated it, its number reserved in Redis. A
//!   node sends a device's control message or relayed frame for a session or
//!   code of another node to that node only ([`Frame::Control`],
//!   [`Frame::RelayFrom`]); what the hub sends to a stand-in goes to the
//!   stand-in's node ([`Frame::ToCtrl`], [`Frame::ToRelay`]). A relayed frame
//!   crosses between nodes once.
//!
//! Redis is not in the path of relayed bytes or of established sessions: while
//! it is unreachable, every node goes on relaying and signaling for the
//! devices and sessions it knows, admits devices with the presence it knows,
//! and refuses what needs Redis (new codes, claims of other nodes' codes,
//! connections to devices it has not heard of) with a clear error. When Redis
//! is back (or restarted empty), every node writes its entries again and
//! exchanges what it missed with the other nodes.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerpipe_proto::id::DeviceId;
use peerpipe_proto::relay::RelayHeader;
use peerpipe_proto::signal::{ClientMessage, CloseReason, ErrorCode, ServerMessage, SessionId};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::hub::{Fatal, Handle, Hub, Member, Overflow, Route};
use crate::redis::{Redis, RedisError};
use peerpipe_proto::node_link::{Conn, Frame};
use peerpipe_proto::resp::Reply;

mod link;
mod metrics;

pub(crate) use self::link::LinkQueue;
pub(crate) use self::metrics::ClusterMetrics;

/// How often a node renews its heartbeat and reads the others'.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node whose heartbeat is older than this is gone.
const LEASE: Duration = Duration::from_secs(3);
/// Devices' Redis commands one node has in flight at most.
const REDIS_SLOTS: usize = 32;
/// Presence hashes expire this long after their user's last admission (their
/// entries are kept right while devices come and go; this only forgets users
/// who never come back).
const PRESENCE_TTL_SECS: u64 = 7 * 24 * 3600;
/// Admissions re-written to Redis at once after it came back.
const RESYNC_PARALLEL: usize = 64;
/// Sessions and codes of other nodes remembered per connection, to end them
/// when their node is gone.
const MAX_HELD_PER_CONN: usize = 4096;
/// Nodes found gone are remembered this long (a beat of theirs older than
/// the verdict does not bring them back).
const TOMBSTONE: Duration = Duration::from_secs(600);

/// Keys in Redis.
const NODES: &str = "pp:nodes";
const ADDRS: &str = "pp:addr";
const DEVICES: &str = "pp:dev";

fn user_key(user: &str) -> Vec<u8> {
    [b"pp:u:".as_slice(), user.as_bytes()].concat()
}

fn code_key(nameplate: u32) -> String {
    format!("pp:code:{nameplate}")
}

/// The set of a node's devices, for sweeping them when the node is gone.
fn node_key(node: u32) -> String {
    format!("pp:n:{node}")
}

/// A member of a node's set of devices.
fn node_member(m: &Member) -> Vec<u8> {
    let user = if m.anonymous { "" } else { &m.user };
    [m.device.to_string().as_bytes(), b"\n", user.as_bytes()].concat()
}

/// Renews this node's heartbeat and address, forgets nodes gone for long, and
/// returns the live nodes and their addresses.
const HEARTBEAT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 600000)
for _, id in ipairs(old) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[3]), '+inf', 'WITHSCORES')
local ids, beats, addrs = {}, {}, {}
for i = 1, #live, 2 do
  ids[#ids + 1] = live[i]
  beats[#beats + 1] = live[i + 1]
  addrs[#addrs + 1] = redis.call('HGET', KEYS[2], live[i]) or ''
end
return {tostring(now), ids, addrs, beats}
";

/// The address of node ARGV[1] if its heartbeat is younger than ARGV[2] ms.
const NODE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if beat and tonumber(beat) >= now - tonumber(ARGV[2]) then
  return redis.call('HGET', KEYS[2], ARGV[1])
end
return false
";

/// Writes a device's entry in the device hash (KEYS[1]), in the node's set of
/// its devices (KEYS[2], members `device NEWLINE user`) and, unless KEYS[3]
/// is absent (an anonymous device), in its user's hash; returns the device's
/// entry before and the user's hash after.
const JOIN_SCRIPT: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
if KEYS[3] == nil then
  return {old or '', {}}
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {old or '', redis.call('HGETALL', KEYS[3])}
";

/// Removes the entries of gone node ARGV[1] (KEYS[1] its set of devices,
/// KEYS[2] the device hash) where they are still that node's.
const SWEEP_SCRIPT: &str = r"
local prefix = ARGV[1] .. ' '
local function mine(key, device)
  local v = redis.call('HGET', key, device)
  return v and string.sub(v, 1, #prefix) == prefix
end
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local cut = string.find(m, '\n', 1, true)
  if cut then
    local device, user = string.sub(m, 1, cut - 1), string.sub(m, cut + 1)
    if mine(KEYS[2], device) then redis.call('HDEL', KEYS[2], device) end
    local ukey = 'pp:u:' .. user
    if user ~= '' and mine(ukey, device) then redis.call('HDEL', ukey, device) end
  end
end
redis.call('DEL', KEYS[1])
return 0
";

/// Removes field ARGV[1] of every hash in KEYS but the first whose value is
/// still ARGV[2], and member ARGV[3] of the set KEYS[1].
const FORGET_SCRIPT: &str = r"
redis.call('SREM', KEYS[1], ARGV[3])
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], ARGV[1]) == ARGV[2] then
    redis.call('HDEL', KEYS[i], ARGV[1])
  end
end
return 0
";

/// Deletes key KEYS[1] if it still holds ARGV[1].
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A connection of another node, as the hub here reaches it.
#[derive(Debug)]
pub(crate) struct Remote {
    /// The node it is on.
    pub(crate) node: u32,
    /// Its id there.
    pub(crate) conn: u64,
    link: Arc<LinkQueue>,
}

impl Remote {
    pub(crate) fn kill(&self, fatal: &Fatal) {
        self.link.push(&Frame::Kill {
            conn: self.conn,
            code: fatal.code,
            message: fatal.message.clone(),
        });
    }

    pub(crate) fn ctrl(&self, text: String) {
        self.link.push(&Frame::ToCtrl {
            conn: self.conn,
            text,
        });
    }

    pub(crate) fn relay(&self, frame: Bytes) -> Result<(), Overflow> {
        let frame = Frame::ToRelay {
            conn: self.conn,
            frame,
        };
        if self.link.try_push(&frame) {
            Ok(())
        } else {
            Err(Overflow::Connection)
        }
    }

    pub(crate) fn closed(&self, session: SessionId, text: String, discard: bool) {
        self.link.push(&Frame::ToClosed {
            conn: self.conn,
            session,
            discard,
            text,
        });
    }
}

/// Another node, as this one knows it.
#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    /// The outgoing link, made on first use.
    link: Option<Arc<LinkQueue>>,
}

/// A session or code of another node that a connection of this node is a
/// party of: it ends when that node is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Held {
    Session(SessionId),
    Code(u32),
}

#[derive(Debug)]
struct State {
    /// The other live nodes.
    nodes: HashMap<u32, Peer>,
    /// This node's admitted connections.
    locals: HashMap<u64, Member>,
    /// Per connection of this node, the nodes that stand in for it.
    exported: HashMap<u64, HashSet<u32>>,
    /// Stand-ins for connections of other nodes: (node, connection there).
    proxies: HashMap<(u32, u64), Member>,
    /// Per connection of this node, what it holds on other nodes.
    held: HashMap<u64, HashSet<(u32, Held)>>,
    /// No node is judged gone before this: heartbeats are being renewed
    /// after Redis was unreachable.
    judge_after: Option<Instant>,
    /// Something failed to reach Redis: write everything again once it answers.
    dirty: bool,
    /// Redis connections made so far, as last seen.
    connections: u64,
    /// A new connection to Redis was made: write everything again.
    resync: bool,
    /// The server stopped: no more heartbeats.
    stopped: bool,
    /// A resync is running.
    resyncing: bool,
    /// Nodes found gone: Redis's clock (ms) at the verdict, and when it was.
    gone: HashMap<u32, (u64, Instant)>,
    /// Redis's clock at the last heartbeat (ms), and when it was read.
    redis_now: (u64, Instant),
}

impl Default for State {
    fn default() -> Self {
        Self {
            nodes: HashMap::new(),
            locals: HashMap::new(),
            exported: HashMap::new(),
            proxies: HashMap::new(),
            held: HashMap::new(),
            judge_after: None,
            dirty: false,
            connections: 0,
            resync: false,
            stopped: false,
            resyncing: false,
            gone: HashMap::new(),
            redis_now: (0, Instant::now()),
        }
    }
}

impl State {
    /// Redis's clock now, as far as this node can tell (ms).
    fn redis_ms(&self) -> u64 {
        let (at, read) = self.redis_now;
        at + u64::try_from(read.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
    }
}

/// This node's part of the cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    id: u32,
    secret: Vec<u8>,
    /// The link address other nodes dial.
    addr: SocketAddr,
    redis: Redis,
    /// A connection of its own for the heartbeat, with a time-out below its
    /// period: a busy main connection (a burst of admissions) never holds it up.
    beat: Redis,
    hub: Weak<Hub>,
    /// Devices' Redis commands in flight at most.
    slots: tokio::sync::Semaphore,
    /// The hashes Redis knows the scripts by.
    scripts: Mutex<HashMap<Vec<u8>, String>>,
    state: Mutex<State>,
    pub(crate) metrics: ClusterMetrics,
    codes_ended: mpsc::UnboundedSender<u32>,
}

/// Where and how a node of a cluster runs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) redis: String,
    pub(crate) listen: SocketAddr,
    pub(crate) advertise: Option<SocketAddr>,
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

fn unreachable(e: RedisError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string())
}

fn text(r: &Reply) -> Option<&str> {
    match r {
        Reply::Bulk(b) => std::str::from_utf8(b).ok(),
        Reply::Status(s) => Some(s),
        _ => None,
    }
}

/// A presence entry: `node conn label`.
fn entry(node: u32, conn: u64, label: &str) -> String {
    format!("{node} {conn} {label}")
}

fn parse_entry(s: &str) -> Option<(u32, u64, &str)> {
    let mut it = s.splitn(3, ' ');
    let node = it.next()?.parse().ok()?;
    let conn = it.next()?.parse().ok()?;
    Some((node, conn, it.next().unwrap_or("")))
}

fn describe(m: &Member) -> Conn {
    Conn {
        conn: m.handle.conn,
        device: m.device,
        user: m.user.to_string(),
        anonymous: m.anonymous,
        ip: m.ip,
        label: m.label.to_string(),
    }
}

impl Cluster {
    /// Joins the cluster behind `settings.redis`: registers a fresh node id,
    /// listens for links, and keeps the heartbeat. Fails if Redis cannot be
    /// reached now.
    pub(crate) async fn start(
        hub: &Arc<Hub>,
        settings: Settings,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Arc<Self>> {
        let redis = Redis::open(&settings.redis).map_err(|e| invalid(e.to_string()))?;
        let listener = TcpListener::bind(settings.listen).await?;
        let bound = listener.local_addr()?;
        let addr = settings.advertise.unwrap_or(bound);
        if addr.ip().is_unspecified() {
            return Err(invalid(format!(
                "the cluster link address {addr} is no address other nodes can dial: \
                 give --cluster-advertise HOST:PORT"
            )));
        }
        let addr_text = addr.to_string();
        let mut id = None;
        for _ in 0..16 {
            let candidate = rand::random::<u32>().max(1);
            let n = candidate.to_string();
            let taken = redis
                .query(&[
                    b"HSETNX",
                    ADDRS.as_bytes(),
                    n.as_bytes(),
                    addr_text.as_bytes(),
                ])
                .await
                .map_err(unreachable)?;
            if matches!(taken, Reply::Int(1)) {
                id = Some(candidate);
                break;
            }
        }
        let Some(id) = id else {
            return Err(invalid("no free node id in 16 draws".into()));
        };
        let (codes_ended, ended_rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            id,
            secret: hub.config.secret.clone(),
            addr,
            beat: Redis::open(&settings.redis)
                .map_err(|e| invalid(e.to_string()))?
                .with_timeout(HEARTBEAT * 9 / 10),
            redis,
            hub: Arc::downgrade(hub),
            slots: tokio::sync::Semaphore::new(REDIS_SLOTS),
            scripts: Mutex::new(HashMap::new()),
            state: Mutex::new(State::default()),
            metrics: ClusterMetrics::default(),
            codes_ended,
        });
        if hub.cluster.set(cluster.clone()).is_err() {
            return Err(invalid("this server is in a cluster already".into()));
        }
        // The first heartbeat makes the first connection: nothing to write again.
        cluster.lock().connections = 1;
        cluster.heartbeat().await.map_err(unreachable)?;
        tokio::spawn(link::accept_loop(cluster.clone(), listener, stop));
        tokio::spawn(heartbeat_loop(Arc::downgrade(&cluster)));
        tokio::spawn(release_codes(Arc::downgrade(&cluster), ended_rx));
        tracing::info!(
            node = id,
            link = %addr,
            redis = %cluster.redis.url_for_display(),
            "joined the cluster"
        );
        Ok(cluster)
    }

    /// This node's id.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.upgrade()
    }

    /// One Redis command, timed and counted.
    async fn redis(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        self.timed(&self.redis, args).await
    }

    /// One command on `redis` (one of this node's handles), timed and
    /// counted. Devices' commands take one of [`REDIS_SLOTS`] first (a burst
    /// of admissions or departures waits here, not in Redis, where it would
    /// hold up every node's heartbeat); the heartbeat takes none. `EVAL` goes
    /// as `EVALSHA` once Redis has the script.
    async fn timed(&self, redis: &Redis, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let _slot = if std::ptr::eq(redis, &self.beat) {
            None
        } else {
            self.slots.acquire().await.ok()
        };
        let start = Instant::now();
        let r = match args {
            [b"EVAL", script, rest @ ..] => self.eval(redis, script, rest).await,
            _ => redis.query(args).await,
        };
        self.metrics.redis(start.elapsed(), r.is_ok());
        if r.is_err() {
            self.lock().dirty = true;
        }
        r
    }

    /// Runs `script` by its hash, loading it first if Redis does not have it
    /// (a first use, or a Redis restarted since).
    async fn eval(
        &self,
        redis: &Redis,
        script: &[u8],
        rest: &[&[u8]],
    ) -> Result<Reply, RedisError> {
        let known = self
            .scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(script)
            .cloned();
        let by_hash = |sha: &str| {
            let mut args: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes()];
            args.extend_from_slice(rest);
            args.iter().map(|a| a.to_vec()).collect::<Vec<Vec<u8>>>()
        };
        if let Some(sha) = known {
            let args = by_hash(&sha);
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            match redis.query(&refs).await {
                Err(RedisError::Server(m)) if m.starts_with("NOSCRIPT") => {}
                r => return r,
            }
        }
        let loaded = redis.query(&[b"SCRIPT", b"LOAD", script]).await?;
        let Some(sha) = text(&loaded).map(str::to_owned) else {
            return Err(RedisError::Protocol("SCRIPT LOAD answered no hash".into()));
        };
        self.scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(script.to_vec(), sha.clone());
        let args = by_hash(&sha);
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        redis.query(&refs).await
    }

    /// Renews the heartbeat; learns the live nodes, and judges the missing ones gone.
    async fn heartbeat(self: &Arc<Self>) -> Result<(), RedisError> {
        let id = self.id.to_string();
        let addr = self.addr.to_string();
        let lease = LEASE.as_millis().to_string();
        let reply = self
            .timed(
                &self.beat,
                &[
                    b"EVAL",
                    HEARTBEAT_SCRIPT.as_bytes(),
                    b"2",
                    NODES.as_bytes(),
                    ADDRS.as_bytes(),
                    id.as_bytes(),
                    addr.as_bytes(),
                    lease.as_bytes(),
                ],
            )
            .await?;
        let Reply::Array(parts) = reply else {
            return Ok(());
        };
        let (
            Some(now),
            Some(Reply::Array(ids)),
            Some(Reply::Array(addrs)),
            Some(Reply::Array(beats)),
        ) = (
            parts
                .first()
                .and_then(text)
                .and_then(|t| t.parse::<u64>().ok()),
            parts.get(1),
            parts.get(2),
            parts.get(3),
        )
        else {
            return Ok(());
        };
        let live: HashMap<u32, (SocketAddr, u64)> = ids
            .iter()
            .zip(addrs)
            .zip(beats)
            .filter_map(|((i, a), b)| {
                let beat = text(b)?.parse::<f64>().ok()? as u64;
                Some((text(i)?.parse().ok()?, (text(a)?.parse().ok()?, beat)))
            })
            .filter(|(n, _)| *n != self.id)
            .collect();
        let connections = *self.beat.connections().borrow();
        let mut back = Vec::new();
        let gone: Vec<u32> = {
            let mut st = self.lock();
            st.redis_now = (now, Instant::now());
            st.gone.retain(|_, (_, at)| at.elapsed() < TOMBSTONE);
            for (n, (addr, beat)) in &live {
                if let Some((verdict, _)) = st.gone.get(n) {
                    if beat <= verdict {
                        // The beat of a node found gone, not yet expired.
                        continue;
                    }
                    // Judged gone, yet alive: it lost what this node sent it
                    // meanwhile, and this node forgot its devices.
                    st.gone.remove(n);
                    back.push(*n);
                }
                st.nodes.entry(*n).or_insert(Peer {
                    addr: *addr,
                    link: None,
                });
            }
            // A new connection to Redis (maybe to a Redis restarted empty):
            // the other nodes' heartbeats may not be there yet.
            if connections != st.connections {
                st.connections = connections;
                st.judge_after = Some(Instant::now() + LEASE * 2);
                st.resync = true;
            }
            let may_judge = st.judge_after.is_none_or(|t| Instant::now() >= t);
            if may_judge {
                st.judge_after = None;
                st.nodes
                    .keys()
                    .filter(|n| !live.contains_key(n))
                    .copied()
                    .collect()
            } else {
                Vec::new()
            }
        };
        for n in gone {
            self.node_gone(n);
        }
        for n in back {
            tracing::warn!(
                node = n,
                "a node found gone is back: exchanging presence again"
            );
            self.send(n, &Frame::Reset);
            self.spawn_resync();
        }
        Ok(())
    }

    /// The link to node `node`, made on first use; `None` for a node not known alive.
    fn link_to(self: &Arc<Self>, node: u32) -> Option<Arc<LinkQueue>> {
        let mut st = self.lock();
        let peer = st.nodes.get_mut(&node)?;
        if let Some(l) = &peer.link {
            return Some(l.clone());
        }
        let queue = Arc::new(LinkQueue::new());
        peer.link = Some(queue.clone());
        tokio::spawn(link::write_loop(
            self.clone(),
            node,
            peer.addr,
            queue.clone(),
        ));
        Some(queue)
    }

    /// Sends `frame` to node `node`, if it is known alive.
    fn send(self: &Arc<Self>, node: u32, frame: &Frame) {
        if let Some(link) = self.link_to(node) {
            link.push(frame);
        }
    }

    /// Notes that node `node` stands in for connection `conn` of this node;
    /// false if that connection is gone.
    fn export(&self, conn: u64, node: u32) -> bool {
        let mut st = self.lock();
        if st.locals.contains_key(&conn) {
            st.exported.entry(conn).or_default().insert(node);
            true
        } else {
            false
        }
    }

    /// The stand-in for connection `c` of node `node`, made on first use.
    /// `user`: the user's name already held here (shared, not copied).
    fn proxy(self: &Arc<Self>, node: u32, c: &Conn, user: Option<&Arc<str>>) -> Option<Member> {
        if let Some(m) = self.lock().proxies.get(&(node, c.conn)) {
            return Some(m.clone());
        }
        let hub = self.hub()?;
        let link = self.link_to(node)?;
        let member = Member {
            device: c.device,
            user: user
                .filter(|u| ***u == *c.user)
                .cloned()
                .or_else(|| hub.shared_user(&c.user))
                .unwrap_or_else(|| c.user.as_str().into()),
            anonymous: c.anonymous,
            ip: c.ip,
            label: c.label.as_str().into(),
            handle: Handle {
                conn: hub.next_conn.fetch_add(1, Ordering::Relaxed),
                route: Route::Remote(Arc::new(Remote {
                    node,
                    conn: c.conn,
                    link,
                })),
            },
        };
        let mut st = self.lock();
        Some(st.proxies.entry((node, c.conn)).or_insert(member).clone())
    }

    /// Whether node `node` is another node alive: known from the heartbeats,
    /// or (a node younger than this node's last heartbeat read) from its
    /// heartbeat in Redis, which it then is known by.
    async fn alive(&self, node: u32) -> bool {
        if node == self.id {
            return false;
        }
        {
            let st = self.lock();
            if st.nodes.contains_key(&node) {
                return true;
            }
            if st.gone.contains_key(&node) {
                return false;
            }
        }
        let n = node.to_string();
        let lease = LEASE.as_millis().to_string();
        let Ok(reply) = self
            .redis(&[
                b"EVAL",
                NODE_SCRIPT.as_bytes(),
                b"2",
                NODES.as_bytes(),
                ADDRS.as_bytes(),
                n.as_bytes(),
                lease.as_bytes(),
            ])
            .await
        else {
            return false;
        };
        let Some(addr) = text(&reply).and_then(|a| a.parse().ok()) else {
            return false;
        };
        self.lock()
            .nodes
            .entry(node)
            .or_insert(Peer { addr, link: None });
        true
    }

    /// A device of this node is admitted (before the hub registers it, so
    /// that its welcome lists its user's devices on every node).
    pub(crate) async fn join(self: &Arc<Self>, me: &Member) {
        self.lock().locals.insert(me.handle.conn, me.clone());
        if let Err(e) = self.publish(me, true).await {
            tracing::warn!(
                "cannot share this device's presence with the cluster (Redis: {e}); \
                 it is admitted, and shared once Redis answers"
            );
        }
    }

    /// Writes `me`'s entries in Redis and exchanges presence with the nodes
    /// of its user's other devices. `fresh`: it was just admitted, and
    /// replaces an older connection of its device on another node (not when
    /// this node repeats what it has, after Redis came back).
    async fn publish(self: &Arc<Self>, me: &Member, fresh: bool) -> Result<(), RedisError> {
        let device = me.device.to_string();
        let value = entry(self.id, me.handle.conn, &me.label);
        let ttl = PRESENCE_TTL_SECS.to_string();
        let node_set = node_key(self.id);
        let member = node_member(me);
        let user = user_key(&me.user);
        let mut args: Vec<&[u8]> = vec![
            b"EVAL",
            JOIN_SCRIPT.as_bytes(),
            if me.anonymous { b"2" } else { b"3" },
            DEVICES.as_bytes(),
            node_set.as_bytes(),
        ];
        if !me.anonymous {
            args.push(&user);
        }
        args.extend([
            device.as_bytes(),
            value.as_bytes(),
            ttl.as_bytes(),
            member.as_slice(),
        ]);
        let reply = self.redis(&args).await?;
        if !self.lock().locals.contains_key(&me.handle.conn) {
            // It left while its entry was written: its leave may have gone first.
            self.forget(me).await;
            return Ok(());
        }
        let Reply::Array(parts) = reply else {
            return Ok(());
        };
        let Some(hub) = self.hub() else {
            return Ok(());
        };
        let mut tell: HashSet<u32> = HashSet::new();
        if fresh
            && let Some((node, conn, _)) = parts.first().and_then(text).and_then(parse_entry)
            && conn != me.handle.conn
            && self.alive(node).await
        {
            // The device was on another node: that node closes the old connection.
            tell.insert(node);
        }
        let mut stale = Vec::new();
        if let Some(Reply::Array(all)) = parts.get(1) {
            for pair in all.chunks(2) {
                let (Some(d), Some(v)) = (pair.first().and_then(text), pair.get(1).and_then(text))
                else {
                    continue;
                };
                let (Ok(dev), Some((node, conn, label))) = (d.parse::<DeviceId>(), parse_entry(v))
                else {
                    continue;
                };
                if dev == me.device || node == self.id {
                    continue;
                }
                if !self.alive(node).await {
                    stale.push((d.to_owned(), v.to_owned()));
                    continue;
                }
                let c = Conn {
                    conn,
                    device: dev,
                    user: me.user.to_string(),
                    anonymous: false,
                    ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    label: label.to_owned(),
                };
                if let Some(proxy) = self.proxy(node, &c, Some(&me.user)) {
                    hub.register_remote(&proxy, false);
                    self.send(node, &Frame::Subscribe { conn });
                }
                tell.insert(node);
            }
        }
        let joined = Frame::Joined {
            from: describe(me),
            replace: fresh,
        };
        for node in tell {
            if self.export(me.handle.conn, node) {
                self.send(node, &joined);
            }
        }
        for (d, v) in stale {
            self.forget_entry(std::slice::from_ref(&user), &d, &v, b"")
                .await;
        }
        Ok(())
    }

    /// Removes `device`'s entry from the device hash and `hashes` if it is
    /// still `value`, and `member` from this node's set of devices.
    async fn forget_entry(&self, hashes: &[Vec<u8>], device: &str, value: &str, member: &[u8]) {
        let node_set = node_key(self.id);
        let n = (hashes.len() + 2).to_string();
        let mut args: Vec<&[u8]> = vec![
            b"EVAL",
            FORGET_SCRIPT.as_bytes(),
            n.as_bytes(),
            node_set.as_bytes(),
        ];
        args.extend(hashes.iter().map(Vec::as_slice));
        args.extend([
            DEVICES.as_bytes(),
            device.as_bytes(),
            value.as_bytes(),
            member,
        ]);
        if let Err(e) = self.redis(&args).await {
            tracing::debug!("cannot remove a presence entry from Redis: {e}");
        }
    }

    /// Removes the entries of `me`, a device of this node that is gone.
    async fn forget(&self, me: &Member) {
        let hashes = if me.anonymous {
            Vec::new()
        } else {
            vec![user_key(&me.user)]
        };
        self.forget_entry(
            &hashes,
            &me.device.to_string(),
            &entry(self.id, me.handle.conn, &me.label),
            &node_member(me),
        )
        .await;
    }

    /// A device of this node is gone (after the hub forgot it), or was
    /// never admitted after [`Cluster::join`].
    pub(crate) async fn leave(self: &Arc<Self>, me: &Member) {
        let conn = me.handle.conn;
        let nodes = {
            let mut st = self.lock();
            st.locals.remove(&conn);
            st.held.remove(&conn);
            st.exported.remove(&conn).unwrap_or_default()
        };
        for node in nodes {
            self.send(node, &Frame::Gone { conn });
        }
        self.forget(me).await;
    }

    /// The node a session lives on, if another live one.
    fn owner(&self, session: SessionId) -> Option<u32> {
        let node = u32::try_from(session.0 >> 32).ok()?;
        (node != self.id && self.lock().nodes.contains_key(&node)).then_some(node)
    }

    /// The node device `to` is on, if another live one, from the device hash.
    async fn find_device(&self, to: &DeviceId) -> Option<u32> {
        let d = to.to_string();
        let reply = self
            .redis(&[b"HGET", DEVICES.as_bytes(), d.as_bytes()])
            .await
            .ok()?;
        let (node, _, _) = parse_entry(text(&reply)?)?;
        self.alive(node).await.then_some(node)
    }

    /// The node code `nameplate` lives on, if another live one: from Redis,
    /// or (Redis not answering) from what this connection holds.
    async fn code_owner(&self, conn: u64, nameplate: u32) -> Option<u32> {
        let node = match self.redis(&[b"GET", code_key(nameplate).as_bytes()]).await {
            Ok(reply) => text(&reply)?.parse().ok()?,
            Err(_) => self.lock().held.get(&conn).and_then(|h| {
                h.iter()
                    .find(|(_, x)| *x == Held::Code(nameplate))
                    .map(|(n, _)| *n)
            })?,
        };
        self.alive(node).await.then_some(node)
    }

    /// Handles a control message of device `me` of this node: here, or on the
    /// node its session or code lives on.
    pub(crate) async fn control(self: &Arc<Self>, me: &Member, msg: ClientMessage, raw: &str) {
        let Some(hub) = self.hub() else { return };
        let node = match &msg {
            ClientMessage::Connect { to, .. } => match hub.locate(to) {
                Some(at) => at,
                None => self.find_device(to).await,
            },
            ClientMessage::Accept { session, .. }
            | ClientMessage::Reject { session }
            | ClientMessage::Close { session } => self.owner(*session),
            ClientMessage::CodeClaim { nameplate, .. }
            | ClientMessage::CodeMessage { nameplate, .. }
            | ClientMessage::CodeRelease { nameplate } => {
                if hub.has_code(*nameplate) {
                    None
                } else {
                    self.code_owner(me.handle.conn, *nameplate).await
                }
            }
            ClientMessage::CodeAllocate { req, nameplate } => {
                self.allocate(&hub, me, *req, *nameplate).await;
                return;
            }
            _ => None,
        };
        match node.and_then(|n| Some((n, self.link_to(n)?))) {
            Some((node, link)) => {
                self.export(me.handle.conn, node);
                // What the device ends itself is no longer held there.
                let ended = match &msg {
                    ClientMessage::Close { session } | ClientMessage::Reject { session } => {
                        Some(Held::Session(*session))
                    }
                    ClientMessage::CodeRelease { nameplate } => Some(Held::Code(*nameplate)),
                    _ => None,
                };
                if let Some(item) = ended
                    && let Some(h) = self.lock().held.get_mut(&me.handle.conn)
                {
                    h.remove(&(node, item));
                }
                link.push_wait(&Frame::Control {
                    from: describe(me),
                    text: raw.to_owned(),
                })
                .await;
            }
            None => hub.control(me, msg),
        }
    }

    /// Allocates a code for `me`: its number reserved in Redis for this node,
    /// then the code kept here.
    async fn allocate(
        self: &Arc<Self>,
        hub: &Arc<Hub>,
        me: &Member,
        req: u64,
        chosen: Option<u32>,
    ) {
        let ttl_ms = (hub.config.code_ttl * 2 + Duration::from_secs(60))
            .as_millis()
            .to_string();
        let id = self.id.to_string();
        let candidates: Vec<u32> = match chosen {
            Some(n) => vec![n],
            None => {
                let range = 999 * (self.lock().nodes.len() as u32 + 1);
                (0..16)
                    .map(|_| rand::Rng::gen_range(&mut rand::thread_rng(), 1..=range))
                    .collect()
            }
        };
        let mut reserved = None;
        for n in candidates {
            let key = code_key(n);
            match self
                .redis(&[
                    b"SET",
                    key.as_bytes(),
                    id.as_bytes(),
                    b"NX",
                    b"PX",
                    ttl_ms.as_bytes(),
                ])
                .await
            {
                Ok(Reply::Status(_)) => {
                    reserved = Some(n);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    hub.send_error(
                        &me.handle,
                        Some(req),
                        None,
                        ErrorCode::Internal,
                        &format!("the cluster cannot reserve a code now: {e}"),
                    );
                    return;
                }
            }
        }
        let Some(n) = reserved else {
            let (code, message) = if chosen.is_some() {
                (
                    ErrorCode::CodeTaken,
                    "this code number is in use: choose another",
                )
            } else {
                (
                    ErrorCode::RateLimited,
                    "no free code numbers: try again later",
                )
            };
            hub.send_error(&me.handle, Some(req), None, code, message);
            return;
        };
        if !hub.code_allocate(me, req, Some(n)) {
            self.code_ended(n);
        }
    }

    /// Code `nameplate` of this node ended: its number is free again.
    pub(crate) fn code_ended(&self, nameplate: u32) {
        let _ = self.codes_ended.send(nameplate);
    }

    /// The link to the node a relayed frame of device `me` goes to, if its
    /// session lives on another node (and `me` takes part in it there).
    pub(crate) fn route_away(
        self: &Arc<Self>,
        me: &Member,
        frame: &[u8],
    ) -> Option<Arc<LinkQueue>> {
        let header = RelayHeader::peek(frame).ok()?;
        let node = self.owner(header.session)?;
        // Only into a session this connection takes part in there: anything
        // else gets the hub's answer here, as on one server.
        let held = self
            .lock()
            .held
            .get(&me.handle.conn)
            .is_some_and(|h| h.contains(&(node, Held::Session(header.session))));
        let link = held.then(|| self.link_to(node)).flatten()?;
        self.metrics.forwarded(frame.len());
        Some(link)
    }

    /// Handles a frame from node `from`.
    fn on_frame(self: &Arc<Self>, from: u32, frame: Frame) {
        self.metrics.received();
        let Some(hub) = self.hub() else { return };
        let local = |conn: u64| self.lock().locals.get(&conn).cloned();
        match frame {
            Frame::ToCtrl { conn, text } => match local(conn) {
                Some(m) => {
                    self.note_held(from, conn, &text);
                    hub.deliver_text(&m.handle, text);
                }
                None => self.send(from, &Frame::Gone { conn }),
            },
            Frame::ToRelay { conn, frame } => {
                let (Some(m), Ok(header)) = (local(conn), RelayHeader::peek(&frame)) else {
                    return;
                };
                let len = frame.len();
                let session = header.session;
                match m.handle.push_relay(session, frame) {
                    Ok(()) => hub.metrics.relayed(len),
                    Err(_) => {
                        // As on one server: the session ends here and now,
                        // its frames still queued dropped (the devices resend
                        // them on a new route), and its node ends it there.
                        hub.metrics.relay_overflow();
                        let reason = CloseReason::RelayOverflow;
                        let text = ServerMessage::Closed { session, reason }.encode();
                        m.handle.push_closed(session, text, true);
                        self.send(from, &Frame::Overflow { conn, session });
                    }
                }
            }
            Frame::ToClosed {
                conn,
                session,
                discard,
                text,
            } => {
                if let Some(m) = local(conn) {
                    if let Some(h) = self.lock().held.get_mut(&conn) {
                        h.remove(&(from, Held::Session(session)));
                    }
                    m.handle.push_closed(session, text, discard);
                }
            }
            Frame::Kill {
                conn,
                code,
                message,
            } => {
                if let Some(m) = local(conn) {
                    m.handle.kill(Fatal::new(code, message));
                }
            }
            Frame::Control { from: c, text } => {
                let Ok(msg) = ClientMessage::decode(&text) else {
                    return;
                };
                if let Some(proxy) = self.proxy(from, &c, None) {
                    hub.control(&proxy, msg);
                }
            }
            Frame::RelayFrom { conn, frame } => {
                let proxy = self.lock().proxies.get(&(from, conn)).cloned();
                if let (Some(proxy), Ok(header)) = (proxy, RelayHeader::peek(&frame)) {
                    hub.relay(&proxy, header.session, frame);
                }
            }
            Frame::Joined { from: c, replace } => {
                if let Some(proxy) = self.proxy(from, &c, None) {
                    hub.register_remote(&proxy, replace);
                }
            }
            Frame::Reset => self.reset_from(from),
            Frame::Gone { conn } => {
                let proxy = self.lock().proxies.remove(&(from, conn));
                if let Some(proxy) = proxy {
                    hub.unregister(&proxy);
                }
            }
            Frame::Subscribe { conn } => {
                let known = {
                    let mut st = self.lock();
                    let known = st.locals.contains_key(&conn);
                    if known {
                        st.exported.entry(conn).or_default().insert(from);
                    }
                    known
                };
                if !known {
                    self.send(from, &Frame::Gone { conn });
                }
            }
            Frame::Overflow { conn, session } => {
                let proxy = self.lock().proxies.get(&(from, conn)).cloned();
                if let Some(proxy) = proxy {
                    hub.remote_overflow(proxy.handle.conn, session);
                }
            }
            Frame::Challenge { .. } | Frame::Auth { .. } => {
                tracing::debug!(node = from, "a handshake frame in the middle of a link");
            }
        }
    }

    /// Remembers the sessions and codes of node `from` that connection `conn`
    /// of this node takes part in, from what that node tells it.
    fn note_held(&self, from: u32, conn: u64, text: &str) {
        let Ok(msg) = ServerMessage::decode(text) else {
            return;
        };
        let (add, item) = match msg {
            ServerMessage::Incoming { session, .. }
            | ServerMessage::Connected { session, .. }
            | ServerMessage::Accepted { session, .. } => (true, Held::Session(session)),
            ServerMessage::CodeJoined { nameplate, .. } => (true, Held::Code(nameplate)),
            ServerMessage::Closed { session, .. }
            | ServerMessage::Error {
                session: Some(session),
                ..
            } => (false, Held::Session(session)),
            ServerMessage::CodeClosed { nameplate } => (false, Held::Code(nameplate)),
            _ => return,
        };
        let mut st = self.lock();
        let held = st.held.entry(conn).or_default();
        if add {
            if held.len() < MAX_HELD_PER_CONN {
                held.insert((from, item));
            } else {
                tracing::warn!(
                    conn,
                    "a connection takes part in too many sessions and codes of other nodes: \
                     not following this one"
                );
            }
        } else {
            held.remove(&(from, item));
        }
    }

    /// The link from node `node` ended: if the node does not take a
    /// connection either, it is gone now (not only at its lease's end).
    fn link_lost(self: &Arc<Self>, node: u32) {
        let addr = self.lock().nodes.get(&node).map(|p| p.addr);
        let Some(addr) = addr else { return };
        let cluster = self.clone();
        tokio::spawn(async move {
            let probe = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            if matches!(probe, Ok(Err(_))) {
                tracing::info!(node, "the node does not answer on its link address");
                cluster.node_gone(node);
            }
        });
    }

    /// A dial to node `node` failed.
    fn link_failed(&self, node: u32) {
        tracing::trace!(node, "dial failed");
    }

    /// Node `node` is gone: its devices go offline here, and what this node's
    /// devices had there ends; its entries in Redis are swept.
    fn node_gone(self: &Arc<Self>, node: u32) {
        {
            let mut st = self.lock();
            let Some(peer) = st.nodes.remove(&node) else {
                return;
            };
            if let Some(l) = peer.link {
                l.close();
            }
            let verdict = st.redis_ms();
            st.gone.insert(node, (verdict, Instant::now()));
        }
        self.metrics.node_died();
        let devices = self.forget_node(node);
        tracing::warn!(
            node,
            devices,
            "a node of the cluster is gone: its devices are offline"
        );
        let cluster = self.clone();
        tokio::spawn(async move {
            let n = node.to_string();
            let set = node_key(node);
            let _ = cluster
                .redis(&[
                    b"EVAL",
                    SWEEP_SCRIPT.as_bytes(),
                    b"2",
                    set.as_bytes(),
                    DEVICES.as_bytes(),
                    n.as_bytes(),
                ])
                .await;
        });
    }

    /// Node `from` may have lost what this node sent it, or judged this node
    /// gone: what this node holds of `from`'s connections is forgotten, and
    /// this node tells the cluster again what it has.
    fn reset_from(self: &Arc<Self>, from: u32) {
        let devices = self.forget_node(from);
        tracing::info!(
            node = from,
            devices,
            "a node resets what it shares with this one"
        );
        self.spawn_resync();
    }

    /// Forgets the stand-ins for connections of node `node` (they go offline
    /// here, their sessions end) and ends what this node's devices hold
    /// there; returns how many stand-ins there were.
    fn forget_node(self: &Arc<Self>, node: u32) -> usize {
        let (proxies, held) = {
            let mut st = self.lock();
            let keys: Vec<(u32, u64)> = st
                .proxies
                .keys()
                .filter(|(n, _)| *n == node)
                .copied()
                .collect();
            let proxies: Vec<Member> = keys.iter().filter_map(|k| st.proxies.remove(k)).collect();
            let mut held = Vec::new();
            for (conn, items) in st.held.iter_mut() {
                items.retain(|(n, item)| {
                    if *n == node {
                        held.push((*conn, *item));
                    }
                    *n != node
                });
            }
            for nodes in st.exported.values_mut() {
                nodes.remove(&node);
            }
            let held: Vec<(Member, Held)> = held
                .into_iter()
                .filter_map(|(c, item)| Some((st.locals.get(&c)?.clone(), item)))
                .collect();
            (proxies, held)
        };
        let Some(hub) = self.hub() else {
            return proxies.len();
        };
        for proxy in &proxies {
            hub.unregister(proxy);
        }
        for (m, item) in held {
            match item {
                Held::Session(session) => {
                    let text = ServerMessage::Closed {
                        session,
                        reason: CloseReason::PeerDisconnected,
                    }
                    .encode();
                    m.handle.push_closed(session, text, false);
                }
                Held::Code(nameplate) => {
                    hub.deliver(&m.handle, &ServerMessage::CodeClosed { nameplate });
                }
            }
        }
        proxies.len()
    }

    /// Runs a [`Cluster::resync`] in the background, unless one runs.
    fn spawn_resync(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            if st.resyncing {
                st.resync = true;
                return;
            }
            st.resyncing = true;
        }
        let cluster = self.clone();
        tokio::spawn(async move {
            cluster.resync().await;
            let again = {
                let mut st = cluster.lock();
                st.resyncing = false;
                std::mem::take(&mut st.resync)
            };
            if again {
                cluster.spawn_resync();
            }
        });
    }

    /// Writes every entry of this node again (Redis came back, maybe empty)
    /// and exchanges presence with the other nodes.
    async fn resync(self: &Arc<Self>) {
        use futures_util::StreamExt as _;
        let locals: Vec<Member> = self.lock().locals.values().cloned().collect();
        let codes = self.hub().map(|h| h.code_numbers()).unwrap_or_default();
        tracing::info!(
            devices = locals.len(),
            codes = codes.len(),
            "writing this node's presence and codes to Redis again"
        );
        // Codes first: their numbers before another node draws them.
        let id = self.id.to_string();
        let ttl = self
            .hub()
            .map_or(Duration::from_secs(600), |h| h.config.code_ttl * 2)
            .as_millis()
            .to_string();
        let reserve: Vec<Vec<Vec<u8>>> = codes
            .iter()
            .map(|n| {
                ["SET", &code_key(*n), &id, "NX", "PX", &ttl]
                    .map(|a| a.as_bytes().to_vec())
                    .to_vec()
            })
            .collect();
        let mut failed = false;
        if !reserve.is_empty() {
            let start = Instant::now();
            let r = self.redis.pipeline(&reserve).await;
            self.metrics.redis(start.elapsed(), r.is_ok());
            match r {
                Ok(replies) => {
                    for (n, reply) in codes.iter().zip(replies) {
                        if !matches!(reply, Reply::Nil) {
                            continue;
                        }
                        // Reserved already: ours (written before the outage
                        // ended), or another node's, whose claims go there.
                        let owner = self.redis(&[b"GET", code_key(*n).as_bytes()]).await;
                        let ours = owner.as_ref().ok().and_then(text).is_none_or(|o| o == id);
                        if !ours && let Some(hub) = self.hub() {
                            tracing::warn!(
                                nameplate = n,
                                "another node took this code's number while Redis was away: \
                                 the code ends"
                            );
                            hub.end_code(*n);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot reserve this node's codes in Redis again: {e}");
                    failed = true;
                }
            }
        }
        let failures = futures_util::stream::iter(locals)
            .map(|m| {
                let cluster = self.clone();
                async move { cluster.publish(&m, false).await.is_err() }
            })
            .buffer_unordered(RESYNC_PARALLEL)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        if failed || failures > 0 {
            self.lock().dirty = true;
        }
    }

    /// The server stops: the other nodes are told by the heartbeat's removal
    /// (they take this node's devices offline at their next heartbeat; the
    /// devices reconnect to them), and every link is closed.
    async fn stop(&self) {
        let id = self.id.to_string();
        let _ = self
            .redis(&[b"ZREM", NODES.as_bytes(), id.as_bytes()])
            .await;
        let _ = self
            .redis(&[b"HDEL", ADDRS.as_bytes(), id.as_bytes()])
            .await;
        let mut st = self.lock();
        st.stopped = true;
        for peer in st.nodes.values() {
            if let Some(l) = &peer.link {
                l.close();
            }
        }
    }

    /// Renders this node's cluster metrics.
    pub(crate) fn render(&self, out: &mut String) {
        let (nodes, proxies) = {
            let st = self.lock();
            (st.nodes.len(), st.proxies.len())
        };
        self.metrics.render(out, self.id, nodes, proxies);
    }
}

/// Renews the heartbeat every [`HEARTBEAT`]; after Redis was unreachable or
/// restarted, judges no node gone for a lease and writes this node's entries
/// again.
async fn heartbeat_loop(cluster: Weak<Cluster>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = cluster.upgrade() else { return };
        if c.lock().stopped {
            return;
        }
        let ok = match c.heartbeat().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("cannot renew the heartbeat in Redis: {e}");
                false
            }
        };
        let resync = {
            let mut st = c.lock();
            if !ok {
                st.judge_after = Some(Instant::now() + LEASE * 2);
            }
            let resync = ok && (st.resync || st.dirty) && !st.resyncing;
            if resync {
                st.resync = false;
                st.dirty = false;
            }
            resync
        };
        if resync {
            c.spawn_resync();
        }
    }
}

/// Frees the numbers of this node's ended codes in Redis.
async fn release_codes(cluster: Weak<Cluster>, mut ended: mpsc::UnboundedReceiver<u32>) {
    while let Some(n) = ended.recv().await {
        let Some(c) = cluster.upgrade() else { return };
        let id = c.id.to_string();
        let key = code_key(n);
        let _ = c
            .redis(&[
                b"EVAL",
                RELEASE_SCRIPT.as_bytes(),
                b"1",
                key.as_bytes(),
                id.as_bytes(),
            ])
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_spaces_in_labels() {
        let e = entry(7, 42, "my laptop");
        assert_eq!(parse_entry(&e), Some((7, 42, "my laptop")));
        assert_eq!(parse_entry("7 42 "), Some((7, 42, "")));
        assert_eq!(parse_entry("x 42 a"), None);
        assert_eq!(parse_entry("7"), None);
    }
}
