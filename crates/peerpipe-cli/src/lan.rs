//! `send`/`receive` on one local network without a server: the sender runs an
//! embedded server on its LAN address and announces the code's number and the
//! server's port by multicast; the receiver listens for the number of its code
//! and joins that server. Everything after that is as with any server: the
//! code's key exchange, the end-to-end session, the relay then a direct path.
//!
//! The announcement says only the number (which any server learns too), never
//! anything of the code's words: a device on the LAN that answers with a
//! server of its own meets a key exchange it cannot pass, and at worst uses the
//! code up.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use peerpipe_proto::lan::{Announcement, MAX_LEN};
use peerpipe_server::{Config, Server};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The multicast group announcements go to (administratively scoped: stays
/// within the site).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 78, 78);
/// The UDP port announcements go to.
pub const PORT: u16 = 7877;
/// How often the sender announces.
const EVERY: Duration = Duration::from_millis(500);

/// The address this host sends multicast from: its address on the interface
/// of the default route (a UDP `connect` sends nothing).
fn lan_address() -> Result<Ipv4Addr> {
    let socket =
        std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("opening a UDP socket")?;
    socket
        .connect((GROUP, PORT))
        .context("no route to the local network (is there a default route?)")?;
    match socket.local_addr().context("reading the local address")? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() && !a.ip().is_loopback() => Ok(*a.ip()),
        other => bail!("no local network address to offer (found {other})"),
    }
}

/// An embedded server for one `send`, reachable from the local network.
pub struct LanServer {
    server: Server,
    ip: Ipv4Addr,
}

impl LanServer {
    /// Starts a server on this host's LAN address, port chosen by the system,
    /// admitting devices without a token (they can only use codes).
    pub async fn start() -> Result<Self> {
        let ip = lan_address()?;
        let secret: [u8; 32] = rand::random();
        let mut config = Config::new(secret.to_vec());
        config.listen = SocketAddr::from((ip, 0));
        let server = Server::bind(config)
            .await
            .context("starting the server for the local network")?;
        Ok(Self { server, ip })
    }

    /// The URL the sender itself joins.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Announces `nameplate` with this server's port until the handle is
    /// dropped (it aborts the task).
    pub fn announce(&self, nameplate: u32) -> Result<Announcing> {
        let socket = std::net::UdpSocket::bind((self.ip, 0)).context("opening the announcer")?;
        socket
            .set_multicast_ttl_v4(1)
            .context("limiting announcements to the local network")?;
        socket.set_nonblocking(true).context("announcer")?;
        let socket = UdpSocket::from_std(socket).context("announcer")?;
        let text = Announcement {
            nameplate,
            port: self.server.local_addr().port(),
        }
        .encode();
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = socket.send_to(&text, (GROUP, PORT)).await {
                    tracing::debug!("announcing on the local network: {e}");
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        Ok(Announcing(task))
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Announcements running; dropping it stops them.
pub struct Announcing(JoinHandle<()>);

impl Drop for Announcing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a failed join of `server` means there is no server to use here: none
/// is configured (`server` is the built-in default) and nothing listens there.
pub fn no_server_here(server: &str, e: &peerpipe::BindError) -> bool {
    crate::client::server_url(server) == crate::DEFAULT_SERVER
        && matches!(e, peerpipe::BindError::Unreachable(io)
            if io.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Waits (at most `within`) for a sender on the local network announcing
/// `nameplate`; its server's URL.
pub async fn find(nameplate: u32, within: Duration) -> Result<String> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .context("opening a UDP socket")?;
    // Several receivers on one host may listen at once.
    socket.set_reuse_address(true).context("SO_REUSEADDR")?;
    socket
        .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT).into())
        .with_context(|| format!("listening on UDP port {PORT} for senders"))?;
    socket
        .join_multicast_v4(&GROUP, &Ipv4Addr::UNSPECIFIED)
        .context("joining the local network's announcements (is there a default route?)")?;
    socket.set_nonblocking(true).context("listener")?;
    let socket = UdpSocket::from_std(socket.into()).context("listener")?;
    let mut buf = [0u8; MAX_LEN + 1];
    let look = async {
        loop {
            let (n, from) = socket.recv_from(&mut buf).await?;
            match Announcement::decode(&buf[..n]) {
                Some(Announcement { nameplate: n, port }) if n == nameplate => {
                    return Ok::<_, std::io::Error>(format!(
                        "ws://{}/v1/signal",
                        SocketAddr::new(from.ip(), port)
                    ));
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(within, look).await {
        Ok(found) => found.context("listening for senders on the local network"),
        Err(_) => bail!(
            "no sender of code number {nameplate} on the local network within {} s: is `peerpipe send` running there (with no server, or with --lan)?",
            within.as_secs()
        ),
    }
}
