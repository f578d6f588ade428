//! A lab of hosts: one network namespace per host, each with one interface
//! (`wan0`, a TUN device whose other end this process holds), and a switch
//! thread that carries every packet from host to host through the emulated
//! link of that ordered pair.
//!
//! Host `i` has address `10.77.0.(i + 2)/24` and a default route through
//! `wan0`. Packets to an address no host has are dropped. Each ordered pair
//! of hosts has its own [`Link`] (its own queue, rate and random sequence), so
//! a packet between two hosts crosses exactly one emulated link, and a relay
//! in a third host means two.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::link::{Link, LinkConfig, LinkStats, Rng};
use crate::sys;

/// The environment variable that marks a process as already inside the
/// namespaces of [`enter`].
const INSIDE: &str = "PEERPIPE_NETEM_INSIDE";
/// The switch checks for a stop at least this often.
const STOP_CHECK: Duration = Duration::from_millis(20);
/// The most packets read from one host before the others get their turn.
const READ_BATCH: usize = 64;
/// The largest packet read from a TUN device.
const MAX_PACKET: usize = 65_536;

/// Where a process stands after [`enter`].
#[derive(Debug)]
pub enum Entered {
    /// This process is inside fresh user, network and mount namespaces of its
    /// own, with a private `/run`: build the lab.
    Inside,
    /// This process ran a copy of itself inside them, which ended so.
    Ran(ExitStatus),
}

/// Runs this executable again with `args` inside fresh user, network and
/// mount namespaces (`unshare -rnm`), where it may create network namespaces
/// and TUN devices without touching the host's, or says that this process is
/// that copy.
pub fn enter(args: &[&str]) -> io::Result<Entered> {
    if std::env::var_os(INSIDE).is_some() {
        return Ok(Entered::Inside);
    }
    let exe = std::env::current_exe()?;
    let status = Command::new("unshare")
        .arg("-rnm")
        .arg(exe)
        .args(args)
        .env(INSIDE, "1")
        .status()?;
    Ok(Entered::Ran(status))
}

/// Runs `ip` with `args`; an error with its message if it fails.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// One host of a lab.
struct Host {
    name: String,
    addr: Ipv4Addr,
    tun: File,
}

/// The switch's state, shared with the lab's handle.
struct Switch {
    /// Links by (from, to) host index.
    links: HashMap<(usize, usize), Link<Vec<u8>>>,
}

/// A running lab of hosts (see the [crate docs](crate)). Dropping it stops
/// the switch and frees the namespaces' names; the namespaces go with the
/// process's mount namespace.
pub struct Lab {
    hosts: Arc<Vec<Host>>,
    switch: Arc<Mutex<Switch>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<(&str, Ipv4Addr)> = self
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.addr))
            .collect();
        f.debug_struct("Lab").field("hosts", &hosts).finish()
    }
}

impl Lab {
    /// Builds namespaces `names` (each a host), every ordered pair joined by a
    /// link with `config`, random sequences from `seed`. Call it inside the
    /// namespaces of [`enter`]. Needs `ip` (iproute2).
    pub fn start(names: &[&str], config: &LinkConfig, seed: u64) -> io::Result<Self> {
        if !Path::new("/run/netns").exists() {
            let mounted = Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs", "/run"])
                .status()?;
            if !mounted.success() {
                return Err(io::Error::other("cannot mount a private /run"));
            }
            std::fs::create_dir_all("/run/netns")?;
        }
        ip(&["link", "set", "lo", "up"])?;
        let mut hosts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let addr = Ipv4Addr::new(10, 77, 0, u8::try_from(i + 2).map_err(io::Error::other)?);
            let dev = format!("netem{i}");
            let tun = sys::open_tun(&dev)?;
            let cidr = format!("{addr}/24");
            ip(&["netns", "add", name])?;
            ip(&["link", "set", &dev, "netns", name])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
            ip(&["-n", name, "link", "set", &dev, "name", "wan0"])?;
            ip(&["-n", name, "link", "set", "wan0", "txqueuelen", "1000"])?;
            ip(&["-n", name, "addr", "add", &cidr, "dev", "wan0"])?;
            ip(&["-n", name, "link", "set", "wan0", "up"])?;
            ip(&["-n", name, "route", "add", "default", "dev", "wan0"])?;
            hosts.push(Host {
                name: (*name).to_owned(),
                addr,
                tun,
            });
        }
        let mut seeds = Rng::new(seed);
        let mut links = HashMap::new();
        for from in 0..hosts.len() {
            for to in 0..hosts.len() {
                if from != to {
                    links.insert((from, to), Link::new(config.clone(), seeds.next_u64()));
                }
            }
        }
        let hosts = Arc::new(hosts);
        let switch = Arc::new(Mutex::new(Switch { links }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (hosts, switch, stop) = (hosts.clone(), switch.clone(), stop.clone());
            std::thread::Builder::new()
                .name("netem-switch".into())
                .spawn(move || run_switch(&hosts, &switch, &stop))?
        };
        Ok(Self {
            hosts,
            switch,
            stop,
            thread: Some(thread),
        })
    }

    fn index(&self, name: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Switch> {
        self.switch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Host `name`'s address. Panics for a host the lab does not have.
    pub fn addr(&self, name: &str) -> Ipv4Addr {
        self.hosts[self.index(name)].addr
    }

    /// A command that runs `program` in host `name`'s namespace.
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!(
                "--net=/run/netns/{}",
                self.hosts[self.index(name)].name
            ))
            .arg(program);
        command
    }

    /// New settings for the link from `from` to `to`.
    pub fn set_link(&self, from: &str, to: &str, config: LinkConfig) {
        let key = (self.index(from), self.index(to));
        if let Some(link) = self.lock().links.get_mut(&key) {
            link.set_config(config);
        }
    }

    /// New settings for both directions between `a` and `b`.
    pub fn set_path(&self, a: &str, b: &str, config: &LinkConfig) {
        self.set_link(a, b, config.clone());
        self.set_link(b, a, config.clone());
    }

    /// New settings for every link.
    pub fn set_all(&self, config: &LinkConfig) {
        for link in self.lock().links.values_mut() {
            link.set_config(config.clone());
        }
    }

    /// What the link from `from` to `to` counted.
    pub fn stats(&self, from: &str, to: &str) -> LinkStats {
        let key = (self.index(from), self.index(to));
        self.lock()
            .links
            .get(&key)
            .map(Link::stats)
            .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The names are free for the next lab; the namespaces themselves go
        // once nothing uses them.
        for host in self.hosts.iter() {
            let _ = ip(&["netns", "del", &host.name]);
        }
    }
}

/// The host index that owns IPv4 destination of `packet`, if any.
fn destination(hosts: &[Host], packet: &[u8]) -> Option<usize> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    hosts.iter().position(|h| h.addr == dst)
}

fn run_switch(hosts: &[Host], switch: &Mutex<Switch>, stop: &AtomicBool) {
    let files: Vec<&File> = hosts.iter().map(|h| &h.tun).collect();
    let mut buf = vec![0u8; MAX_PACKET];
    while !stop.load(Ordering::Relaxed) {
        let timeout = {
            let sw = switch.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            sw.links
                .values()
                .filter_map(Link::next_arrival)
                .min()
                .map_or(STOP_CHECK, |at| at.saturating_duration_since(now))
                .min(STOP_CHECK)
        };
        let readable = match sys::wait_readable(&files, timeout) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("netem: poll failed: {e}");
                return;
            }
        };
        let mut sw = switch.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        for (from, _) in readable.iter().enumerate().filter(|(_, r)| **r) {
            for _ in 0..READ_BATCH {
                let n = match (&hosts[from].tun).read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        eprintln!("netem: reading from {}: {e}", hosts[from].name);
                        break;
                    }
                };
                let packet = &buf[..n];
                if let Some(to) = destination(hosts, packet).filter(|&to| to != from)
                    && let Some(link) = sw.links.get_mut(&(from, to))
                {
                    link.send(now, n, packet.to_vec());
                }
            }
        }
        let now = Instant::now();
        for (&(_, to), link) in sw.links.iter_mut() {
            while let Some(packet) = link.poll_arrival(now) {
                // A full device queue on the receiving side drops, as a NIC would.
                let _ = (&hosts[to].tun).write(&packet);
            }
        }
    }
}
