//! One-time codes: nameplates (allocated, then claimed once), the messages the
//! two devices of a code exchange, the grant that lets exactly these two
//! devices connect while the code is live, and the rate limits on all of it.

use peerpipe_proto::signal::MAX_CODE_MESSAGES;

use super::*;

/// The answer to a claim of a nameplate that is not there to claim: the same for
/// one never allocated, expired, released or claimed already.
const CODE_NOT_FOUND: &str = "no such code, or it was used already";
/// Codes one connection may hold at once (allocated or claimed).
const MAX_CODES_PER_CONN: usize = 8;
/// Rate-limit buckets kept before idle ones are forgotten.
const MAX_BUCKETS: usize = 4096;
/// Nameplates are drawn from at least `1..=NAMEPLATE_RANGE`.
const NAMEPLATE_RANGE: u32 = 999;

#[derive(Debug)]
pub(super) struct CodeEntry {
    nameplate: u32,
    /// Tells a reused nameplate's timer from this one's.
    id: u64,
    allocator: Member,
    /// Set by the one claim the nameplate takes.
    claimer: Option<Member>,
    /// Code messages sent by the allocator and the claimer.
    sent: [u8; 2],
    timer: Option<AbortHandle>,
}

impl CodeEntry {
    pub(super) fn stop_timer(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }

    /// The other party of connection `conn`, and `conn`'s side (0 allocator, 1
    /// claimer); `None` if `conn` is no party or the code is not claimed.
    pub(super) fn other(&self, conn: u64) -> Option<(&Member, usize)> {
        let claimer = self.claimer.as_ref()?;
        if self.allocator.handle.conn == conn {
            Some((claimer, 0))
        } else if claimer.handle.conn == conn {
            Some((&self.allocator, 1))
        } else {
            None
        }
    }
}

impl State {
    /// Whether a live code joins connections `a` and `b`.
    pub(super) fn code_grant(&self, a: u64, b: u64) -> bool {
        self.codes_by_conn.get(&a).is_some_and(|plates| {
            plates.iter().any(|n| {
                self.codes
                    .get(n)
                    .and_then(|c| c.other(a))
                    .is_some_and(|(other, _)| other.handle.conn == b)
            })
        })
    }

    pub(super) fn remove_code(&mut self, nameplate: u32) -> Option<CodeEntry> {
        let mut code = self.codes.remove(&nameplate)?;
        code.stop_timer();
        let parties = std::iter::once(&code.allocator).chain(code.claimer.as_ref());
        for conn in parties.map(|m| m.handle.conn) {
            if let Some(set) = self.codes_by_conn.get_mut(&conn) {
                set.remove(&nameplate);
                if set.is_empty() {
                    self.codes_by_conn.remove(&conn);
                }
            }
        }
        Some(code)
    }

    /// A free nameplate, drawn at random from `1..=range` where the range is
    /// at least [`NAMEPLATE_RANGE`] and ten times the live codes: short to
    /// type, and a guesser cannot tell which number the next code gets
    /// (claiming one early meets no one).
    pub(super) fn free_nameplate(&self) -> Option<u32> {
        let live = u32::try_from(self.codes.len()).ok()?;
        let range = live.checked_mul(10)?.max(NAMEPLATE_RANGE);
        (0..64)
            .map(|_| rand::Rng::gen_range(&mut rand::thread_rng(), 1..=range))
            .find(|n| !self.codes.contains_key(n))
    }
}

impl Hub {
    /// Tells the parties of an ended code (but `except`) that it ended.
    pub(super) fn code_closed(&self, code: &CodeEntry, except: Option<u64>) {
        let msg = ServerMessage::CodeClosed {
            nameplate: code.nameplate,
        };
        for m in std::iter::once(&code.allocator).chain(code.claimer.as_ref()) {
            if Some(m.handle.conn) != except {
                self.deliver(&m.handle, &msg);
            }
        }
    }

    /// Takes a code operation from `me`'s budget; false (and an error answered)
    /// when codes are off or the budget is spent.
    pub(super) fn code_budget(&self, st: &mut State, me: &Member, req: u64) -> bool {
        let cfg = &self.config;
        let refusal = if !cfg.allow_codes {
            Some((
                ErrorCode::Forbidden,
                "this server does not allow one-time codes",
            ))
        } else if st
            .codes_by_conn
            .get(&me.handle.conn)
            .map_or(0, BTreeSet::len)
            >= MAX_CODES_PER_CONN
        {
            Some((
                ErrorCode::RateLimited,
                "this device holds too many codes at once: use or release one first",
            ))
        } else {
            let now = Instant::now();
            let allowed = if me.anonymous {
                prune(&mut st.code_rate_ip, now);
                // One household (an IPv6 /64) shares one budget.
                st.code_rate_ip
                    .entry(crate::limit::address_key(me.ip))
                    .or_insert_with(|| {
                        TokenBucket::per_minute(cfg.code_rate_per_ip, cfg.code_burst_per_ip, now)
                    })
                    .try_take(now)
            } else {
                prune(&mut st.code_rate_user, now);
                st.code_rate_user
                    .entry(me.user.clone())
                    .or_insert_with(|| {
                        TokenBucket::per_minute(
                            cfg.code_rate_per_user,
                            cfg.code_burst_per_user,
                            now,
                        )
                    })
                    .try_take(now)
            };
            (!allowed).then_some((
                ErrorCode::RateLimited,
                "too many code operations: wait a minute and try again",
            ))
        };
        match refusal {
            Some((code, message)) => {
                self.send_error(&me.handle, Some(req), None, code, message);
                false
            }
            None => true,
        }
    }

    /// Starts (or restarts) the time-out of nameplate `nameplate`.
    pub(super) fn code_timer(self: &Arc<Self>, code: &mut CodeEntry, nameplate: u32) {
        code.stop_timer();
        let hub = Arc::downgrade(self);
        let id = code.id;
        let ttl = self.config.code_ttl;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            if let Some(hub) = hub.upgrade() {
                hub.expire_code(nameplate, id);
            }
        });
        code.timer = Some(timer.abort_handle());
    }

    /// Allocates a nameplate for `me`: `chosen`, if free, else one drawn at
    /// random; whether it did (else `me` has the error).
    pub(crate) fn code_allocate(
        self: &Arc<Self>,
        me: &Member,
        req: u64,
        chosen: Option<u32>,
    ) -> bool {
        let mut st = self.lock();
        if !self.code_budget(&mut st, me, req) {
            return false;
        }
        if let Some(n) = chosen
            && st.codes.contains_key(&n)
        {
            drop(st);
            self.send_error(
                &me.handle,
                Some(req),
                None,
                ErrorCode::CodeTaken,
                "this code number is in use: choose another",
            );
            return false;
        }
        let Some(nameplate) = chosen.or_else(|| st.free_nameplate()) else {
            drop(st);
            self.send_error(
                &me.handle,
                Some(req),
                None,
                ErrorCode::RateLimited,
                "no free code numbers: try again later",
            );
            return false;
        };
        st.next_code_id += 1;
        let mut code = CodeEntry {
            nameplate,
            id: st.next_code_id,
            allocator: me.clone(),
            claimer: None,
            sent: [0; 2],
            timer: None,
        };
        self.code_timer(&mut code, nameplate);
        st.codes.insert(nameplate, code);
        st.codes_by_conn
            .entry(me.handle.conn)
            .or_default()
            .insert(nameplate);
        let ttl_ms = u64::try_from(self.config.code_ttl.as_millis()).unwrap_or(u64::MAX);
        self.deliver(
            &me.handle,
            &ServerMessage::CodeAllocated {
                req,
                nameplate,
                ttl_ms,
            },
        );
        tracing::debug!(nameplate, "code allocated");
        true
    }

    /// The nameplates allocated on this node.
    pub(crate) fn code_numbers(&self) -> Vec<u32> {
        self.lock().codes.keys().copied().collect()
    }

    /// Code `nameplate` of this node lost its number to another node (Redis
    /// restarted empty and the other node drew it first): it ends, and its
    /// devices hear so (the sender makes a new code).
    pub(crate) fn end_code(&self, nameplate: u32) {
        let mut st = self.lock();
        if let Some(code) = st.remove_code(nameplate) {
            self.code_closed(&code, None);
        }
    }

    /// Whether nameplate `nameplate` is allocated on this node.
    pub(crate) fn has_code(&self, nameplate: u32) -> bool {
        self.lock().codes.contains_key(&nameplate)
    }

    /// A code ended: its number is free again, for the whole cluster.
    pub(super) fn code_ended(&self, nameplate: u32) {
        if let Some(cluster) = self.cluster.get() {
            cluster.code_ended(nameplate);
        }
    }

    pub(super) fn code_claim(self: &Arc<Self>, me: &Member, req: u64, nameplate: u32) {
        let mut st = self.lock();
        if !self.code_budget(&mut st, me, req) {
            return;
        }
        let Some(code) = st.codes.get_mut(&nameplate).filter(|c| c.claimer.is_none()) else {
            drop(st);
            self.send_error(
                &me.handle,
                Some(req),
                None,
                ErrorCode::NotFound,
                CODE_NOT_FOUND,
            );
            return;
        };
        if code.allocator.device == me.device {
            drop(st);
            self.send_error(
                &me.handle,
                Some(req),
                None,
                ErrorCode::Forbidden,
                "a device cannot claim its own code",
            );
            return;
        }
        // Neither side learns who the other is here: each introduces itself
        // inside the exchange, once the other proved it knows the code.
        // The one claim: from now on the nameplate is this device's and the
        // allocator's, right code or wrong.
        code.claimer = Some(me.clone());
        let allocator = code.allocator.handle.clone();
        self.code_timer(code, nameplate);
        st.codes_by_conn
            .entry(me.handle.conn)
            .or_default()
            .insert(nameplate);
        self.deliver(&me.handle, &ServerMessage::CodeJoined { req, nameplate });
        self.deliver(&allocator, &ServerMessage::CodeClaimed { nameplate });
        tracing::debug!(nameplate, "code claimed");
    }

    pub(super) fn code_message(&self, me: &Member, nameplate: u32, body: String) {
        let mut st = self.lock();
        let conn = me.handle.conn;
        let Some(code) = st.codes.get_mut(&nameplate) else {
            drop(st);
            self.send_error(&me.handle, None, None, ErrorCode::NotFound, CODE_NOT_FOUND);
            return;
        };
        let Some((to, side)) = code.other(conn).map(|(m, side)| (m.handle.clone(), side)) else {
            drop(st);
            self.send_error(&me.handle, None, None, ErrorCode::NotFound, CODE_NOT_FOUND);
            return;
        };
        if code.sent[side] >= MAX_CODE_MESSAGES {
            drop(st);
            self.send_error(
                &me.handle,
                None,
                None,
                ErrorCode::BadRequest,
                "each device of a code may send at most 4 code messages",
            );
            return;
        }
        code.sent[side] += 1;
        tracing::trace!(nameplate, side, "code message forwarded");
        self.deliver(&to, &ServerMessage::CodeMessage { nameplate, body });
    }

    /// The time-out of a nameplate ran out.
    pub(super) fn expire_code(&self, nameplate: u32, id: u64) {
        let mut st = self.lock();
        if st.codes.get(&nameplate).is_none_or(|c| c.id != id) {
            return;
        }
        if let Some(code) = st.remove_code(nameplate) {
            tracing::debug!(nameplate, "code expired");
            self.code_closed(&code, None);
            self.code_ended(nameplate);
        }
    }

    /// `me` gives up a code it is a party of.
    pub(super) fn code_release(&self, me: &Member, nameplate: u32) {
        let mut st = self.lock();
        let party = st.codes.get(&nameplate).is_some_and(|c| {
            c.allocator.handle.conn == me.handle.conn
                || c.claimer
                    .as_ref()
                    .is_some_and(|m| m.handle.conn == me.handle.conn)
        });
        if let Some(code) = party.then(|| st.remove_code(nameplate)).flatten() {
            tracing::debug!(nameplate, "code released");
            self.code_closed(&code, Some(me.handle.conn));
            self.code_ended(nameplate);
        }
    }
}

/// Forgets idle buckets once there are many.
fn prune<K>(buckets: &mut HashMap<K, TokenBucket>, now: Instant) {
    if buckets.len() >= MAX_BUCKETS {
        buckets.retain(|_, b| !b.is_idle(now));
    }
}
