//! Two devices behind two NATs: the QUIC path is hole-punched.
//!
//! Network namespaces of the test's own (`unshare -rnm`): device A on
//! 10.1.0.2 behind router `ra` (NAT to 198.51.100.1), device B on 10.2.0.2
//! behind router `rb` (NAT to 198.51.101.1), the server and its STUN responder
//! in between on 198.51.100.254. Each router masquerades its LAN and drops
//! unsolicited packets from outside, as home routers do, so neither device can
//! reach the other's private address, and an inbound packet gets through a NAT
//! only after the device behind it sent one out to that address. Both devices
//! learn their NAT mappings with STUN on their QUIC socket; the connection
//! starts on the relay, and the QUIC path opens only because the answering side
//! dials the offering side's mapping while the offering side dials its own.
//!
//! Opt-in (`--ignored`); `.ci/run` runs it in its network-namespace step.

mod common;

use std::fs::File;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TempDir, bin, run_ok, wait_bounded};

const TEST: &str = "the_quic_path_is_hole_punched_through_two_nats";
const SERVER: &str = "198.51.100.254";

/// The topology: namespaces under /run/netns (a tmpfs of this mount
/// namespace), veth links, routes, NAT and the routers' firewalls.
const SETUP: &str = r#"
set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
ip link set lo up
for n in lana ra rb lanb; do ip netns add $n; done
ip link add wa type veth peer name wa-r netns ra
ip link add wb type veth peer name wb-r netns rb
ip addr add 198.51.100.254/24 dev wa; ip link set wa up
ip addr add 198.51.101.254/24 dev wb; ip link set wb up
sysctl -qw net.ipv4.ip_forward=1
nsenter --net=/run/netns/ra ip link add la-r type veth peer name la netns lana
nsenter --net=/run/netns/rb ip link add lb-r type veth peer name lb netns lanb
router() { # ns wan-if wan-addr lan-if lan-addr
  nsenter --net=/run/netns/$1 sh -ec "
    ip link set lo up
    ip addr add $3/24 dev $2; ip link set $2 up
    ip addr add $5/24 dev $4; ip link set $4 up
    ip route add default via ${3%.*}.254
    sysctl -qw net.ipv4.ip_forward=1
    iptables -t nat -A POSTROUTING -o $2 -j MASQUERADE
    iptables -A INPUT -i $2 -m conntrack --ctstate NEW -j DROP
    iptables -A FORWARD -i $2 -m conntrack --ctstate NEW -j DROP"
}
router ra wa-r 198.51.100.1 la-r 10.1.0.1
router rb wb-r 198.51.101.1 lb-r 10.2.0.1
host() { # ns if addr
  nsenter --net=/run/netns/$1 sh -ec "
    ip link set lo up
    ip addr add $3/24 dev $2; ip link set $2 up
    ip route add default via ${3%.*}.1"
}
host lana la 10.1.0.2
host lanb lb 10.2.0.2
"#;

/// A command run inside namespace `ns`.
fn inside(ns: &str, program: &std::path::Path) -> Command {
    let mut command = Command::new("nsenter");
    command.arg(format!("--net=/run/netns/{ns}")).arg(program);
    command
}

#[test]
#[ignore = "needs unshare, nsenter and iptables: its own step of .ci/run"]
fn the_quic_path_is_hole_punched_through_two_nats() {
    // Outside, run this test again inside namespaces of its own, and only there.
    if common::machines::ran_inside(TEST) {
        return;
    }
    let status = Command::new("bash").args(["-c", SETUP]).status().unwrap();
    assert!(status.success(), "setting up the namespaces failed");

    let dir = TempDir::new("nat");
    let secret = dir.path("secret");
    let listen = format!("{SERVER}:7878");
    let stun = format!("{SERVER}:3478");
    let _serve = common::KillOnDrop(
        bin()
            .args([
                "serve",
                "--listen",
                &listen,
                "--stun-listen",
                &stun,
                "--stun",
                &stun,
                // At most ~30 MB/s on the relay: the transfer outlasts a QUIC
                // dial whose first Initial the peer's NAT dropped (quinn sends
                // it again after about a second).
                "--relay-rate",
                "500",
            ])
            .arg("--secret-file")
            .arg(&secret)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The server creates the secret as it starts.
    for _ in 0..200 {
        if secret.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let token = run_ok(
        bin()
            .args(["token", "--user", "alice", "--secret-file"])
            .arg(&secret),
    );
    let token = token.trim().to_owned();
    let (a_key, b_key) = (dir.path("a.key"), dir.path("b.key"));
    let listener = run_ok(bin().arg("id").arg("--identity").arg(&a_key));
    let listener = listener.trim();
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_peerpipe"));
    let client = |ns: &str, cmd: &str, identity: &std::path::Path| {
        let mut c = inside(ns, &exe);
        c.args([cmd, "--server", &listen, "--token", &token, "--identity"])
            .arg(identity);
        c
    };

    // 64 MiB: over 2 s on the rate-limited relay, so the QUIC path opens meanwhile.
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    let input = dir.path("input");
    std::fs::write(&input, &data).unwrap();
    let output = dir.path("output");
    let mut listen_child = common::KillOnDrop(
        client("lana", "listen", &a_key)
            .arg("-q")
            .stdout(File::create(&output).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut online = false;
    for _ in 0..100 {
        let peers = run_ok(&mut client("lanb", "peers", &b_key));
        if peers
            .lines()
            .any(|l| l.split('\t').next() == Some(listener))
        {
            online = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(online, "the listener never came online");
    let mut connect = client("lanb", "connect", &b_key)
        .args(["-v", listener])
        .stdin(File::open(&input).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    connect
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        wait_bounded(&mut connect, Duration::from_secs(60)).success(),
        "{log}"
    );
    assert!(wait_bounded(&mut listen_child.0, Duration::from_secs(30)).success());
    let got = std::fs::read(&output).unwrap();
    assert!(
        got == data,
        "the received file differs ({} bytes)",
        got.len()
    );
    assert!(
        log.contains(": quic (rtt"),
        "no QUIC path through the NATs:\n{log}"
    );
    // The answerer punches with STUN datagrams, not with a QUIC dial that the
    // offerer would refuse for its certificate.
    assert!(
        !log.contains("does not match the fingerprint"),
        "a refused QUIC attempt:\n{log}"
    );
}
