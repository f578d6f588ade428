//! TURN against a real coturn: the sans-IO client allocates, authenticates and
//! relays both ways; and when every UDP datagram between the two devices' own
//! addresses is dropped (iptables), the direct path still opens, through the
//! TURN server's relayed addresses, and the data leaves the signaling relay.
//!
//! Each test runs in a network namespace of its own (`unshare -rn`, loopback
//! only) with its own `turnserver` on 127.0.0.2, so neither the firewall rule
//! nor the TURN server touches anything else. Opt-in (`--ignored`); `.ci/run`
//! runs them as their own step and installs `coturn` and `iptables` first.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use common::{
    EVENT_LIMIT, TestServer, block_on_bounded, pair, rerun_in_netns, run, stream_transfer,
    wait_path,
};
use peerpipe::{IceServer, PathKind};
use peerpipe_proto::stun;
use peerpipe_proto::turn::{Received, TurnClient, TurnError, TurnEvent};
use tokio::net::UdpSocket;

const TURN: &str = "127.0.0.2:3478";
const USER: &str = "peerpipe";
const PASSWORD: &str = "turn-secret";
const LEN: usize = 8 * 1024 * 1024;

/// A `turnserver` in this namespace, stopped when dropped.
struct Coturn {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coturn {
    /// Starts coturn on [`TURN`] with one long-term user and waits until it
    /// answers a STUN binding request.
    async fn start() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("peerpipe-turn-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("turnserver.log");
        let user = format!("{USER}:{PASSWORD}");
        let (pid, db) = (dir.join("turnserver.pid"), dir.join("turndb"));
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp-relay"])
            .args(["--listening-ip", "127.0.0.2", "--listening-port", "3478"])
            .args([
                "--relay-ip",
                "127.0.0.2",
                "--min-port",
                "40000",
                "--max-port",
                "40999",
            ])
            .args(["--lt-cred-mech", "--realm", "peerpipe", "--user", &user])
            .args([
                "--allow-loopback-peers",
                "--log-file",
                "stdout",
                "--simple-log",
            ])
            .arg("--pidfile")
            .arg(&pid)
            .arg("--userdb")
            .arg(&db)
            .stdout(Stdio::from(File::create(&log)?))
            .stderr(Stdio::null())
            .spawn()
            .context("starting turnserver (apt-get install coturn)")?;
        let coturn = Self { child, log };
        let probe = UdpSocket::bind("127.0.0.1:0").await?;
        let server: SocketAddr = TURN.parse()?;
        let mut buf = [0u8; 1500];
        for _ in 0..50 {
            let txid: stun::TransactionId = rand::random();
            probe.send_to(&stun::binding_request(txid), server).await?;
            let answer =
                tokio::time::timeout(Duration::from_millis(100), probe.recv_from(&mut buf)).await;
            if let Ok(Ok((len, _))) = answer
                && stun::parse_binding_response(&buf[..len], txid).is_ok()
            {
                return Ok(coturn);
            }
        }
        bail!(
            "turnserver did not answer; its log: {}",
            coturn.log.display()
        )
    }
}

/// What [`next`] saw.
#[derive(Debug)]
enum Next {
    Event(TurnEvent),
    Data(SocketAddr, Vec<u8>),
}

/// Drives `client` on `socket` until it has an event or relayed data.
async fn next(socket: &UdpSocket, client: &mut TurnClient) -> Result<Next> {
    let deadline = Instant::now() + EVENT_LIMIT;
    let mut buf = vec![0u8; 2048];
    loop {
        if let Some(event) = client.poll_event() {
            return Ok(Next::Event(event));
        }
        while let Some(msg) = client.poll_transmit() {
            socket.send_to(&msg, client.server()).await?;
        }
        ensure!(Instant::now() < deadline, "nothing from the TURN client");
        let wake = client.poll_timeout().unwrap_or(deadline).min(deadline);
        match tokio::time::timeout_at(wake.into(), socket.recv_from(&mut buf)).await {
            Ok(received) => {
                let (len, from) = received?;
                ensure!(from == client.server(), "a datagram from {from}");
                if let Received::Data { from, data } =
                    client.handle_datagram(Instant::now(), &buf[..len])
                {
                    return Ok(Next::Data(from, data.to_vec()));
                }
            }
            Err(_) => client.handle_timeout(Instant::now()),
        }
    }
}

#[test]
#[ignore = "needs unshare and coturn: its own step of .ci/run"]
fn the_turn_client_allocates_and_relays_through_coturn() -> Result<()> {
    if rerun_in_netns("the_turn_client_allocates_and_relays_through_coturn")? {
        return Ok(());
    }
    block_on_bounded(Duration::from_secs(60), async {
        let _coturn = Coturn::start().await?;
        let server: SocketAddr = TURN.parse()?;
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let peer = UdpSocket::bind("127.0.0.1:0").await?;
        let peer_addr = peer.local_addr()?;

        let mut wrong = TurnClient::new(server, USER, "wrong", rand::random(), Instant::now());
        match next(&socket, &mut wrong).await? {
            Next::Event(TurnEvent::Failed(TurnError::Unauthorized)) => {}
            other => bail!("a wrong password gave {other:?}"),
        }

        let mut client = TurnClient::new(server, USER, PASSWORD, rand::random(), Instant::now());
        let relayed = match next(&socket, &mut client).await? {
            Next::Event(TurnEvent::Allocated { relayed, mapped }) => {
                ensure!(mapped == Some(socket.local_addr()?), "mapped {mapped:?}");
                relayed
            }
            other => bail!("no allocation: {other:?}"),
        };
        ensure!(relayed.ip().to_string() == "127.0.0.2", "relayed {relayed}");

        // Out through the relay: the peer sees the relayed address.
        ensure!(client.send_to(Instant::now(), peer_addr, b"through the relay"));
        let mut buf = [0u8; 1500];
        let got = tokio::time::timeout(EVENT_LIMIT, async {
            loop {
                if let Some(msg) = client.poll_transmit() {
                    socket.send_to(&msg, server).await?;
                    continue;
                }
                // The permission's answer releases the waiting datagram.
                let mut tmp = [0u8; 1500];
                tokio::select! {
                    r = peer.recv_from(&mut buf) => return anyhow::Ok(r?),
                    r = socket.recv_from(&mut tmp) => {
                        let (len, _) = r?;
                        client.handle_datagram(Instant::now(), &tmp[..len]);
                    }
                }
            }
        })
        .await
        .context("the peer got nothing")??;
        ensure!(got.1 == relayed, "the peer saw {}", got.1);
        ensure!(&buf[..got.0] == b"through the relay");

        // And back: the peer answers the relayed address.
        peer.send_to(b"and back", relayed).await?;
        match next(&socket, &mut client).await? {
            Next::Data(from, data) => {
                ensure!(from == peer_addr && data == b"and back", "{from} {data:?}");
            }
            other => bail!("no data from the peer: {other:?}"),
        }

        // Released: nothing more goes out through it.
        client.close(Instant::now());
        while let Some(msg) = client.poll_transmit() {
            socket.send_to(&msg, server).await?;
        }
        ensure!(!client.send_to(Instant::now(), peer_addr, b"late"));
        Ok(())
    })
}

/// Packets the first INPUT rule (the host-to-host drop) has dropped.
fn dropped_host_to_host() -> Result<u64> {
    let out = Command::new("iptables")
        .args(["-L", "INPUT", "-v", "-n", "-x"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rule = text
        .lines()
        .find(|l| l.contains("DROP"))
        .context("no DROP rule")?;
    let packets = rule.split_whitespace().next().context("empty rule line")?;
    Ok(packets.parse()?)
}

#[test]
#[ignore = "needs unshare, iptables and coturn: its own step of .ci/run"]
fn the_direct_path_opens_through_turn_when_host_paths_are_blocked() -> Result<()> {
    if rerun_in_netns("the_direct_path_opens_through_turn_when_host_paths_are_blocked")? {
        return Ok(());
    }
    block_on_bounded(Duration::from_secs(90), async {
        let _coturn = Coturn::start().await?;
        // The devices' own sockets are on 127.0.0.1; the TURN server and its
        // relayed addresses on 127.0.0.2.
        let host_to_host = ["INPUT", "-p", "udp", "-s", "127.0.0.1", "-d", "127.0.0.1"];
        run(
            "iptables",
            &[&["-A"][..], &host_to_host, &["-j", "DROP"]].concat(),
        )?;

        let server = TestServer::start().await?;
        let turn = IceServer::turn(&format!("turn:{TURN},{USER},{PASSWORD}"))?;
        let node = |label: &'static str| {
            let builder = server
                .builder("alice", label)
                .quic(false)
                .ice_servers(vec![turn.clone()]);
            async move { builder.bind().await.context("binding a node") }
        };
        let (a, b) = (node("a").await?, node("b").await?);
        let (to_b, from_a) = pair(&a, &b).await?;
        let took = wait_path(&a, &to_b, PathKind::WebRtc).await?;
        wait_path(&b, &from_a, PathKind::WebRtc).await?;
        tracing::info!(?took, "direct path through TURN");

        let relayed_before = server.server.stats().relay_bytes;
        let started = Instant::now();
        stream_transfer(&to_b, &from_a, LEN).await?;
        let secs = started.elapsed().as_secs_f64();
        let relayed = server.server.stats().relay_bytes - relayed_before;
        eprintln!(
            "direct path through TURN: open {took:?} after the relay session, {:.1} MB/s",
            LEN as f64 / secs / 1e6
        );
        ensure!(
            relayed < 64 * 1024,
            "the signaling relay carried {relayed} bytes"
        );
        assert_eq!(to_b.path(), PathKind::WebRtc);
        let dropped = dropped_host_to_host()?;
        ensure!(dropped > 0, "no host-to-host datagram was tried");
        Ok(())
    })
}
