//! Connections on the relay: starting them, routing them on server sessions,
//! routing them again after the link came back (resume), and handing them what
//! the relay carries.

use super::*;

impl Actor {
    /// Drops a connection whose driver ended; returns what to tell the server
    /// (close its route, withdraw its resume allowance).
    pub(super) fn forgotten(
        &mut self,
        id: SessionId,
        reason: CloseReason,
        established: bool,
    ) -> Vec<ClientMessage> {
        let Some(conn) = self.conns.remove(&id) else {
            return Vec::new();
        };
        if established {
            self.emit(NodeEvent::ConnectionClosed {
                peer: conn.inner.peer.id,
                session: id,
                reason,
            });
        }
        let mut out = Vec::new();
        if let Some((route, _)) = conn.route {
            self.routes.remove(&route);
            out.push(ClientMessage::Close { session: route });
        }
        if conn.by_code && !conn.inner.dialer {
            out.push(ClientMessage::RevokeResume {
                peer: conn.inner.peer.id,
                connection: id,
            });
        }
        out
    }

    /// Starts a connection routed on server session `route` (which names it).
    /// False without a link.
    pub(super) fn start_conn(
        &mut self,
        route: SessionId,
        peer: PeerInfo,
        dialer: bool,
        service: Option<String>,
        psk: Option<&Psk>,
        waiter: Waiter,
    ) -> bool {
        let Some(link) = &self.link else {
            waiter_not_connected(waiter);
            return false;
        };
        let config = session_config(&self.cfg, link.max_frame);
        let now = Instant::now().into_std();
        let identity = &self.cfg.identity;
        let session = match Session::with_psk(now, config, identity, peer.id, rand::random(), psk) {
            Ok(s) => s,
            Err(e) => {
                // Only possible for a connection to this device itself, which the
                // server refuses before.
                tracing::warn!(session = %route, "cannot start a session: {e}");
                return false;
            }
        };
        let inner = ConnInner::new(
            route,
            peer,
            dialer,
            service,
            session,
            waiter,
            self.cfg.clone(),
            self.reports_tx.clone(),
        );
        let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
        let env = self.env.subscribe();
        let task = tokio::spawn(drive(inner.clone(), input_rx, env).in_current_span());
        let mut conn = Conn {
            inner,
            input,
            task,
            route: None,
            resuming: false,
            by_code: psk.is_some(),
            retry_at: None,
            retries: 0,
        };
        self.route(&mut conn, route);
        self.conns.insert(route, conn);
        true
    }

    /// Puts `conn` on server session `route`, replacing its old route.
    pub(super) fn route(&mut self, conn: &mut Conn, route: SessionId) {
        let Some(link) = &self.link else { return };
        if let Some((old, path)) = conn.route.take() {
            self.routes.remove(&old);
            deliver(&conn.input, Input::PathDown(path));
        }
        let path = PathId(self.next_path);
        self.next_path += 1;
        let up = Input::PathUp(
            path,
            Route::Relay {
                session: route,
                out: link.out.clone(),
            },
        );
        deliver(&conn.input, up);
        conn.route = Some((route, path));
        self.routes.insert(route, conn.inner.id);
    }

    /// Routes again every connection this side dialed whose peer is online,
    /// and every one made with a code whose retry is due (no presence tells
    /// when a device of another user is back).
    pub(super) async fn resume_all(&mut self) {
        if self.link.is_none() {
            return;
        }
        let now = Instant::now();
        let ids: Vec<SessionId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.inner.dialer
                    && c.route.is_none()
                    && !c.resuming
                    && if c.by_code {
                        c.retry_at.is_none_or(|at| at <= now)
                    } else {
                        self.peers.contains_key(&c.inner.peer.id)
                    }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.resume(id).await;
        }
    }

    /// On a new link: opens this node's doors again (the server forgot them
    /// with the old link).
    pub(super) async fn open_doors(&mut self) {
        let doors: Vec<Door> = self.doors.keys().copied().collect();
        for door in doors {
            self.send_signal(ClientMessage::OpenDoor { door }).await;
        }
    }

    /// On a new link: lets the peers of the code connections this side
    /// accepted route them again (the server forgot that with the old link).
    pub(super) async fn allow_resumes(&mut self) {
        let allow: Vec<ClientMessage> = self
            .conns
            .iter()
            .filter(|(_, c)| c.by_code && !c.inner.dialer)
            .map(|(id, c)| ClientMessage::AllowResume {
                peer: c.inner.peer.id,
                connection: *id,
            })
            .collect();
        for msg in allow {
            self.send_signal(msg).await;
        }
    }

    pub(super) async fn resume(&mut self, id: SessionId) {
        let req = self.request_id();
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.resuming = true;
        let to = conn.inner.peer.id;
        let service = conn.inner.service.clone();
        tracing::debug!(session = %id, "routing the connection again");
        self.pending.insert(req, Pending::Resume(id));
        self.send_signal(ClientMessage::Connect {
            req,
            to,
            resume: Some(id),
            service,
            door: None,
        })
        .await;
    }

    /// The route `route` is gone; its connection waits for another.
    pub(super) fn route_down(&mut self, route: SessionId) -> Option<SessionId> {
        let id = self.routes.remove(&route)?;
        let conn = self.conns.get_mut(&id)?;
        if let Some((_, path)) = conn.route.take() {
            deliver(&conn.input, Input::PathDown(path));
        }
        Some(id)
    }

    /// The peer routes connection `id` again on server session `route`.
    pub(super) async fn incoming_resume(
        &mut self,
        route: SessionId,
        from: PeerInfo,
        id: SessionId,
    ) {
        let known = self
            .conns
            .get(&id)
            .is_some_and(|c| !c.inner.dialer && c.inner.peer.id == from.id);
        if !known {
            tracing::debug!(session = %id, "refusing to route an unknown connection");
            self.send_signal(ClientMessage::Reject { session: route })
                .await;
            return;
        }
        let req = self.request_id();
        // Accept first: the driver must not send on the route before the server
        // has the accept.
        self.send_signal(ClientMessage::Accept {
            req,
            session: route,
        })
        .await;
        self.pending.insert(req, Pending::ResumeAccept(route));
        if let Some(mut conn) = self.conns.remove(&id) {
            tracing::debug!(session = %id, %route, "peer routes the connection again");
            self.route(&mut conn, route);
            self.conns.insert(id, conn);
        }
    }

    /// Hands one relay frame to its connection; returns an input that must wait
    /// for queue room.
    pub(super) fn relay_frame(&mut self, mut frame: Bytes) -> Blocked {
        let header = match RelayHeader::decode(&mut frame) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("bad relay frame from the server: {e}");
                return None;
            }
        };
        let Some(conn) = self
            .routes
            .get(&header.session)
            .and_then(|id| self.conns.get(id))
        else {
            tracing::trace!(session = %header.session, "relay frame for an unknown session");
            return None;
        };
        let (_, path) = conn.route?;
        match conn.input.try_send(Input::Packet(path, frame)) {
            Ok(()) | Err(TrySendError::Closed(_)) => None,
            Err(TrySendError::Full(item)) => Some((conn.input.clone(), item)),
        }
    }
}

/// Queues a control input for a connection; if its queue is full of packets,
/// a task waits for room (the driver drains the queue steadily).
pub(super) fn deliver(input: &mpsc::Sender<Input>, item: Input) {
    if let Err(TrySendError::Full(item)) = input.try_send(item) {
        let input = input.clone();
        tokio::spawn(async move {
            let _ = input.send(item).await;
        });
    }
}

/// Waits for room in the blocked connection's queue (`None`: it went away).
pub(super) fn wait_room(
    blocked: &Blocked,
) -> impl Future<Output = Option<mpsc::OwnedPermit<Input>>> + use<> {
    let tx = blocked.as_ref().map(|(tx, _)| tx.clone());
    async move {
        match tx {
            Some(tx) => tx.reserve_owned().await.ok(),
            None => std::future::pending().await,
        }
    }
}
