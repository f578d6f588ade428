//! `peerpipe`: move data between your devices, peer to peer.
//!
//! Run `peerpipe --help` for the commands. Machine-readable output (ids, tokens,
//! received data) goes to stdout; progress and diagnostics go to stderr.

/// Writes a line of chatter to stderr, like `eprintln!`, but a closed stderr
/// (a log pipe whose reader went away) is no reason to stop: the line is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod client;
mod config;
mod demo;
mod identity;
mod lan;
mod qr;
mod serve;
mod space;
mod spool;
mod transfer;
mod units;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use peerpipe_proto::signal::IceServer;

/// Default signaling server address.
const DEFAULT_SERVER: &str = "ws://127.0.0.1:7878/v1/signal";

#[derive(Parser)]
#[command(
    name = "peerpipe",
    version,
    about = "Move data between your devices, peer to peer",
    long_about = "Move data between your devices, peer to peer.\n\n\
        A signaling + relay server admits devices with a token bound to a user; devices of one \
        user see each other and connect through the server's relay at once, then move to a \
        direct WebRTC data channel when the network allows (and back when it fails). \
        Connections are end-to-end encrypted between the two device keys (the server relays \
        ciphertext and cannot substitute the direct path's keys) and survive a server \
        restart.\n\n\
        Quick start on one machine:\n  \
        peerpipe serve &                                   # prints where its secret lives\n  \
        export PEERPIPE_TOKEN=$(peerpipe token --secret-file ~/.config/peerpipe/server-secret --user me)\n  \
        peerpipe listen --identity /tmp/a > out.bin &      # prints its device id on stderr\n  \
        peerpipe connect DEVICE_ID --identity /tmp/b < in.bin\n\n\
        Files to anyone, with a one-time code (no token needed):\n  \
        peerpipe send ./photos                             # prints a code like 7-amber-falcon\n  \
        peerpipe receive 7-amber-falcon -o ./inbox         # on the other device\n\n\
        The server, token and CA certificate in a config file (a flag or an environment \
        variable wins over it):\n  \
        peerpipe config set server wss://pipe.example.org\n\n\
        Shell completions: peerpipe completions bash|zsh|fish|elvish|powershell"
)]
struct Cli {
    /// More diagnostics on stderr (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the signaling + relay server.
    Serve(ServeArgs),
    /// Mint an admission token for a user (printed on stdout).
    Token(TokenArgs),
    /// Print this device's id (creates the identity on first use).
    Id(IdentityArgs),
    /// List this user's other devices that are online: `ID<TAB>LABEL` per line.
    Peers(ClientArgs),
    /// Accept one connection and write the stream it receives to stdout (like `nc -l`).
    ///
    /// Exits once everything is written out, then the sender exits too.
    Listen(ClientArgs),
    /// Connect to a device and stream stdin to it (like `nc`).
    ///
    /// Reads stdin only as fast as the listener writes its output, and exits once
    /// the listener has written everything out.
    Connect(ConnectArgs),
    /// Run an embedded server and two devices, move a generated file between them.
    Demo(DemoArgs),
    /// Send files or directories to anyone: prints a one-time code (on stdout)
    /// and waits until the receiver has verified everything.
    ///
    /// Instead of files: a short text (--text), printed by the receiver, or
    /// standard input (`-`), received as one file.
    ///
    /// The code (like 7-amber-falcon) works across users and without a token:
    /// its words feed a password-authenticated key exchange through the server,
    /// so neither the server nor someone guessing can read or alter the transfer,
    /// and a wrong guess burns the code. Give it to the receiver by voice or chat.
    Send(SendArgs),
    /// Receive what `peerpipe send` offers under CODE, verified, into a directory
    /// (or one file to stdout with -o -; a text is always printed on stdout).
    ///
    /// First shows what is coming (how many files, their size, the first names)
    /// and, when stdin is a terminal, asks before fetching anything (--yes
    /// accepts without asking). Existing files that differ from the incoming
    /// ones are refused before anything is fetched (--force replaces them), and
    /// so is an offer larger than the free space where it would be written.
    ///
    /// An interrupted receive resumes when run again with the same -o directory
    /// and a new code: what is already verified there is not fetched again.
    Receive(ReceiveArgs),
    /// Share files or directories: prints a ticket (on stdout) and serves until
    /// Ctrl-C. Anyone with the ticket can fetch the files from this device with
    /// `peerpipe get` (with a token of any user, or none), and so can this
    /// user's devices; the server sees neither the files nor the ticket's key.
    /// The same files shared by the same device give the same ticket.
    Share(ShareArgs),
    /// Fetch a ticket's files from the device that shared them and from every
    /// online device of this user that holds them (verified, resumable);
    /// devices fetching the same ticket trade parts.
    ///
    /// Files that do not fit the free space where they would be written are
    /// refused before anything is written.
    Get(GetArgs),
    /// Print a shell completion script on stdout.
    #[command(after_help = "Install, for example:\n  \
        bash: peerpipe completions bash > ~/.local/share/bash-completion/completions/peerpipe\n  \
        zsh:  peerpipe completions zsh > ~/.zfunc/_peerpipe   (with fpath+=~/.zfunc before compinit)\n  \
        fish: peerpipe completions fish > ~/.config/fish/completions/peerpipe.fish\n  \
        elvish: peerpipe completions elvish >> ~/.config/elvish/rc.elv\n  \
        powershell: peerpipe completions powershell >> $PROFILE")]
    Completions(CompletionsArgs),
    /// Keep the server, token and CA certificate in a config file
    /// (`peerpipe config path` prints where).
    ///
    /// The client commands use its values when neither a flag (--server,
    /// --token, --ca-cert) nor an environment variable (PEERPIPE_SERVER,
    /// PEERPIPE_TOKEN, PEERPIPE_CA_CERT) gives them. The file is
    /// $PEERPIPE_CONFIG, else $XDG_CONFIG_HOME/peerpipe/config.toml, else
    /// ~/.config/peerpipe/config.toml: `key = "value"` lines (a subset of
    /// TOML) and # comments, mode 0600.
    Config(config::ConfigArgs),
}

#[derive(Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

/// Options of `send` and `receive`.
#[derive(Args, Clone)]
struct CodeNetArgs {
    /// Admission token (from `peerpipe token`); without one the device joins
    /// anonymously, which the server allows for codes unless it was told not to.
    /// Default: `token` in the config file (peerpipe config).
    #[arg(long, env = "PEERPIPE_TOKEN", hide_env_values = true, value_parser = parse_token)]
    token: Option<String>,
    /// Write JSON event lines on stdout (collection, progress, done) instead of progress bars.
    #[arg(long)]
    json: bool,
    /// Find the other device on the local network instead of through a
    /// server: `send` runs a server of its own on this host's address and
    /// announces the code's number by multicast (239.255.78.78, UDP 7877, on
    /// the interface of the default route), `receive` listens for it. The
    /// default when no server is configured (no --server, PEERPIPE_SERVER or
    /// config file) and none runs at the default address. The code's words
    /// never leave the devices.
    #[arg(long)]
    lan: bool,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    peerpipe send ./photos report.pdf          # files and directories\n  \
    peerpipe send --text 'the wifi password is hunter2'\n  \
    pg_dump shop | peerpipe send - --name shop.sql\n  \
    peerpipe send --qr ./video.mkv             # also a QR code of the receive command\n  \
    peerpipe send --code 4711-amber-falcon x   # a code agreed on beforehand")]
struct SendArgs {
    /// Files and directories to send (directories with everything below them).
    /// `-` alone reads standard input to its end and sends it as one file
    /// named `stdin` (or --name); it is kept in a private temporary directory
    /// (in $TMPDIR) until the send ends, so it must fit there.
    #[arg(required_unless_present = "text", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Send this short text instead of files (at most 64 KiB); the receiver
    /// prints it on its standard output and writes nothing to disk.
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["paths", "name"])]
    text: Option<String>,
    /// The file name the receiver gets for what `-` reads from standard input
    /// (default: stdin).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Also show the receive command as a QR code on stderr (for a phone's
    /// camera); the code line on stdout stays as it is.
    #[arg(long)]
    qr: bool,
    /// Offer this code instead of one the server draws: a number from 1 to
    /// 999999 and two words of the code list, like 4711-amber-falcon (a code
    /// agreed on beforehand). If the server has the number in use, `send`
    /// fails at once and says so. A chosen code is only as secret as its
    /// words: pick them at random, not from a pattern.
    #[arg(long = "code", value_name = "CODE", value_parser = parse_chosen_code)]
    chosen_code: Option<String>,
    #[command(flatten)]
    code: CodeNetArgs,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    peerpipe receive 7-amber-falcon -o ./inbox\n  \
    peerpipe receive                                  # asks for the code\n  \
    peerpipe receive 7-amber-falcon -o - > dump.sql   # the one file, to stdout\n  \
    peerpipe receive 7-amber-falcon -o - | tar x      # a tar sent with: tar c DIR | peerpipe send -")]
struct ReceiveArgs {
    /// The code `peerpipe send` printed, e.g. 7-amber-falcon. Without it,
    /// `receive` asks for it when stdin is a terminal (the code then stays out
    /// of the shell's history and the process list).
    code: Option<String>,
    /// Directory to write into (created if absent). `-` writes the one file
    /// offered to standard output instead, verified as it streams (an offer
    /// of several files is declined; the sender is told). A text sent with
    /// `send --text` is always printed on standard output.
    #[arg(short, long, default_value = ".")]
    out: PathBuf,
    /// Replace existing files that differ from the incoming ones.
    #[arg(long)]
    force: bool,
    /// Accept without asking. Without it, `receive` shows what is coming and
    /// asks before fetching anything when stdin is a terminal (otherwise it
    /// accepts without asking, for scripts).
    #[arg(short, long)]
    yes: bool,
    #[command(flatten)]
    net: CodeNetArgs,
}

#[derive(Args)]
struct ShareArgs {
    /// Files and directories to share.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Write JSON event lines on stdout (the ticket, the collection).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct GetArgs {
    /// The ticket `peerpipe share` printed.
    ticket: String,
    /// Directory to write into (created if absent).
    #[arg(short, long, default_value = ".")]
    out: PathBuf,
    /// Replace existing files that differ from the incoming ones.
    #[arg(long)]
    force: bool,
    /// Keep serving the files to this user's devices after the download (until Ctrl-C).
    #[arg(long)]
    seed: bool,
    /// Write JSON event lines on stdout (collection, progress, done) instead of progress bars.
    #[arg(long)]
    json: bool,
    /// Admission token (from `peerpipe token`): of any user for a pp2 ticket
    /// (without one the device joins anonymously, if the server allows it);
    /// of the sharing user for an old pp1 ticket. With a token, this user's
    /// devices that hold the files serve them too. Default: `token` in the
    /// config file (peerpipe config).
    #[arg(long, env = "PEERPIPE_TOKEN", hide_env_values = true, value_parser = parse_token)]
    token: Option<String>,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on: IP:PORT or HOST:PORT (0.0.0.0:7878 for every
    /// interface).
    #[arg(long, default_value = "127.0.0.1:7878", env = "PEERPIPE_LISTEN")]
    listen: String,
    /// Terminate TLS: the PEM certificate chain (leaf first) clients see;
    /// clients then use wss://. Needs --tls-key.
    #[arg(
        long,
        env = "PEERPIPE_TLS_CERT",
        value_name = "PEM_FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "PEERPIPE_TLS_KEY",
        value_name = "PEM_FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// The URL clients reach this server at, when it differs from what it
    /// listens on (behind a proxy or NAT, or a certificate's host name), e.g.
    /// wss://pipe.example.org. Printed at start-up for clients to use.
    #[arg(long, env = "PEERPIPE_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// File holding the token secret; created with a fresh random secret if absent.
    /// Default: ~/.config/peerpipe/server-secret.
    #[arg(long, env = "PEERPIPE_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Largest binary frame accepted, relay header included.
    #[arg(long, default_value = "128KiB", value_parser = units::parse_size)]
    max_frame: u64,
    /// Control messages per second allowed per connection.
    #[arg(long, default_value = "20")]
    control_rate: u32,
    /// Relayed frames per second allowed per connection (excess is delayed, not dropped).
    #[arg(long, default_value = "20000")]
    relay_rate: u32,
    /// Devices one user may have online at once (1 to 4096).
    #[arg(long, default_value = "32")]
    max_devices_per_user: usize,
    /// Time a new connection has to authenticate (and to send its HTTP request
    /// head, and finish its TLS handshake).
    #[arg(long, default_value = "10s", value_parser = units::parse_duration)]
    handshake_timeout: Duration,
    /// TCP connections open at once; lowered at start to fit below the
    /// process's open-file limit. Over it, new connections get HTTP 503
    /// (`/health` still answers).
    #[arg(long, default_value = "16384")]
    max_connections: usize,
    /// TCP connections open at once from one address (an IPv6 /64 counts as
    /// one). Over it, new connections get HTTP 429. Behind a reverse proxy
    /// raise it: every device has the proxy's address.
    #[arg(long, default_value = "256")]
    max_connections_per_ip: usize,
    /// Silence after which a device is dropped and shown offline.
    #[arg(long, default_value = "30s", value_parser = units::parse_duration)]
    idle_timeout: Duration,
    /// Time a device has to answer a connection request.
    #[arg(long, default_value = "30s", value_parser = units::parse_duration)]
    accept_timeout: Duration,
    /// Time a device may stop reading relayed data before it is disconnected.
    /// Only that device: the devices relaying to it are never slowed or closed.
    #[arg(long, default_value = "30s", value_parser = units::parse_duration)]
    slow_consumer_timeout: Duration,
    /// Relayed data queued for one session's receiver (each frame counted with
    /// 64 bytes of overhead). Past it that session ends with reason
    /// relay_overflow, both devices stay online. The default holds a session's
    /// largest flow-control window (16 MiB) and its packet overhead.
    #[arg(long, default_value = "17MiB", value_parser = units::parse_size)]
    relay_session_queue: u64,
    /// Relayed data queued for one device over all its sessions; past it the
    /// session whose frame does not fit ends, as above.
    #[arg(long, default_value = "64MiB", value_parser = units::parse_size)]
    relay_connection_queue: u64,
    /// A STUN server to announce to devices for direct paths: HOST:PORT or
    /// stun:HOST:PORT. Repeat for several.
    #[arg(long, value_name = "URL", value_parser = parse_stun)]
    stun: Vec<IceServer>,
    /// A TURN server to announce to devices: URL,USER,PASSWORD with URL
    /// turn:HOST:PORT, turns:HOST:PORT (optionally ?transport=udp|tcp) or HOST:PORT.
    /// peerpipe devices use TURN over UDP (turn: without ?transport=tcp).
    /// Repeat for several.
    #[arg(long, value_name = "URL,USER,PASS", value_parser = parse_turn)]
    turn: Vec<IceServer>,
    /// Also answer STUN binding requests on this UDP address (e.g. 0.0.0.0:3478),
    /// so devices behind NATs learn their public address; announce it to them
    /// with --stun PUBLIC_HOST:3478. On a host with several addresses, bind the
    /// announced one: answers leave from the address the routing table picks,
    /// and a NAT drops answers from an address it did not send to.
    #[arg(long, value_name = "ADDR")]
    stun_listen: Option<SocketAddr>,
    /// Refuse devices without a token. By default anonymous devices are admitted,
    /// but may only use one-time codes (`peerpipe send`/`receive`).
    #[arg(long)]
    no_anonymous: bool,
    /// Refuse one-time codes altogether (and with them anonymous devices).
    #[arg(long)]
    no_codes: bool,
    /// How long a code waits for its receiver.
    #[arg(long, default_value = "10m", value_parser = units::parse_duration)]
    code_ttl: Duration,
    /// Code operations (a send or a receive each) per minute from one IP address
    /// for anonymous devices, sustained (a transfer takes two).
    #[arg(long, default_value = "60", value_name = "N")]
    code_rate_per_ip: u32,
    /// Code operations in a burst from one IP address for anonymous devices.
    #[arg(long, default_value = "30", value_name = "N")]
    code_burst_per_ip: u32,
    /// Serve the web page (send and receive by code in a browser) at / from
    /// this directory, as scripts/web-page builds it (index.html at its root).
    /// Default: the first of EXE_DIR/../share/peerpipe/web (an installed
    /// copy) and EXE_DIR/../web (the build tree: target/release/peerpipe
    /// serves target/web) that holds index.html, where EXE_DIR is the
    /// directory of this program; none found: no page.
    #[arg(long, env = "PEERPIPE_WEB_DIR", value_name = "DIR")]
    web_dir: Option<PathBuf>,
    /// Serve no web page: only /v1/signal, /health and /metrics answer.
    /// Conflicts with --web-dir; wins over PEERPIPE_WEB_DIR.
    #[arg(long)]
    no_web: bool,
    /// Be one node of a cluster sharing this Redis (redis://HOST:PORT, or
    /// redis://USER:PASSWORD@HOST:PORT/DB): devices on every node
    /// see and reach each other as on one server, behind any load balancer.
    /// Every node needs the same --secret-file. Without it: one server,
    /// state in memory.
    #[arg(
        long,
        env = "PEERPIPE_REDIS",
        value_name = "URL",
        hide_env_values = true
    )]
    redis: Option<String>,
    /// With --redis: where to listen for links from the other nodes
    /// (relayed data and signaling for devices on them). Default: the IP of
    /// --listen, a free port.
    #[arg(long, value_name = "ADDR", requires = "redis")]
    cluster_listen: Option<SocketAddr>,
    /// With --redis: the address other nodes dial for links to this one,
    /// when it differs from --cluster-listen (which then may be 0.0.0.0:PORT).
    #[arg(long, value_name = "ADDR", requires = "redis")]
    cluster_advertise: Option<SocketAddr>,
}

/// A token is never empty: `--token ""` (an unset variable, say) is a mistake,
/// not a request to join anonymously (leave `--token` out for that).
fn parse_token(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err(
            "the token is empty (for `send`/`receive` without a token, leave --token out)".into(),
        );
    }
    Ok(s.to_string())
}

fn parse_chosen_code(s: &str) -> Result<String, String> {
    let code: peerpipe_proto::code::Code = s.parse().map_err(|e| format!("{e}"))?;
    if code.nameplate() > peerpipe_proto::signal::MAX_CHOSEN_NAMEPLATE {
        return Err(peerpipe_proto::code::CodeParseError::ChosenNameplate.to_string());
    }
    Ok(code.to_string())
}

fn parse_stun(s: &str) -> Result<IceServer, String> {
    IceServer::stun(s).map_err(|e| e.to_string())
}

fn parse_turn(s: &str) -> Result<IceServer, String> {
    IceServer::turn(s).map_err(|e| e.to_string())
}

#[derive(Args)]
struct TokenArgs {
    /// The server's secret file (as given to `peerpipe serve`).
    #[arg(long, env = "PEERPIPE_SECRET_FILE")]
    secret_file: PathBuf,
    /// The user the token admits; all devices with tokens for one user see each other.
    #[arg(long)]
    user: String,
    /// How long the token is valid (90s, 15m, 12h, 30d).
    #[arg(long, default_value = "30d", value_parser = units::parse_duration)]
    ttl: Duration,
}

#[derive(Args, Clone)]
struct IdentityArgs {
    /// This device's key file; created on first use. `listen` and `share`, the
    /// commands others reach by device id, hold it for themselves (a second one
    /// is refused); the other commands join as a short-lived device of the same
    /// user, so they run beside them. Use different files to run several
    /// listeners on one machine. Default: ~/.config/peerpipe/identity.
    #[arg(long, env = "PEERPIPE_IDENTITY")]
    identity: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// Admission token (from `peerpipe token`). Default: `token` in the
    /// config file (peerpipe config).
    #[arg(long, env = "PEERPIPE_TOKEN", hide_env_values = true, value_parser = parse_token)]
    token: String,
    #[command(flatten)]
    net: NetArgs,
}

/// How a device reaches the server and its peers (shared by all client commands).
#[derive(Args, Clone)]
struct NetArgs {
    /// Signaling server: a ws:// or wss:// URL (http:// and https:// work too),
    /// or HOST:PORT. The default is `server` in the config file (peerpipe
    /// config) if set there.
    #[arg(long, env = "PEERPIPE_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// Trust the certificates in this PEM file for a wss:// server, besides the
    /// system's roots (a private CA, or a server's self-signed certificate).
    /// Default: `ca-cert` in the config file (peerpipe config).
    #[arg(long, env = "PEERPIPE_CA_CERT", value_name = "PEM_FILE")]
    ca_cert: Option<PathBuf>,
    #[command(flatten)]
    identity: IdentityArgs,
    /// A name the user's other devices see for this one. Default: the host name.
    #[arg(long, env = "PEERPIPE_LABEL")]
    label: Option<String>,
    /// Give up connecting or waiting for an answer after this long.
    #[arg(long, default_value = "15s", value_parser = units::parse_duration)]
    timeout: Duration,
    /// Never take a direct path: all data goes through the server's relay (for
    /// networks where peer-to-peer UDP is unwanted). The other device is told.
    #[arg(long, conflicts_with = "direct_only")]
    relay_only: bool,
    /// Take no QUIC path: direct paths are WebRTC data channels only (QUIC is
    /// otherwise tried first between two native devices).
    #[arg(long)]
    no_quic: bool,
    /// Drop the relay once the direct path is up, for testing that data really
    /// goes direct: if the direct path then fails, the connection ends.
    #[arg(long)]
    direct_only: bool,
    /// A STUN server (HOST:PORT or stun:HOST:PORT) to learn this device's public
    /// address from for direct paths. With --stun or --turn, the servers given
    /// here replace the ones the server announces. Repeat for several.
    #[arg(long, value_name = "URL", value_parser = parse_stun)]
    stun: Vec<IceServer>,
    /// A TURN server to relay the direct path through when the devices cannot
    /// reach each other's addresses: URL,USER,PASSWORD with URL turn:HOST:PORT
    /// or HOST:PORT (TURN over UDP; end-to-end encrypted, the TURN server sees
    /// only ciphertext). Repeat for several.
    #[arg(long, value_name = "URL,USER,PASS", value_parser = parse_turn)]
    turn: Vec<IceServer>,
}

#[derive(Args)]
struct ConnectArgs {
    /// The device to send to (see `peerpipe peers`): its id, the start of its id
    /// (at least 4 characters, like the short id in the logs) or its label.
    peer: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct DemoArgs {
    /// Size of the generated file (e.g. 64MiB, 1GiB).
    #[arg(long, default_value = "256MiB", value_parser = units::parse_size)]
    size: u64,
}

fn main() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            say!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, cli.quiet));
    // A blocking read of a terminal or of stdin that was cut short (by Ctrl-C,
    // say) must not keep the process from exiting.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line, with the config file's values as the defaults of
/// the client commands' `--server`, `--token` and `--ca-cert` (flags and
/// environment variables win over them). Usage errors, `--help` and
/// `--version` end the process as clap does; a malformed config file is an
/// error for the client commands (their `--help` still works).
fn parse_command_line() -> anyhow::Result<Cli> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    let mut config_error = None;
    if config::is_client_command(&args) {
        match config::Config::load(&config::path()) {
            Ok(config) => command = config::apply(command, &config),
            Err(e) => config_error = Some(e),
        }
    }
    let matches = match command.try_get_matches_from_mut(&args) {
        Ok(matches) => matches,
        Err(e) => match (e.kind(), config_error) {
            (
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
                _,
            )
            | (_, None) => e.exit(),
            (_, Some(config_error)) => return Err(config_error),
        },
    };
    if let Some(config_error) = config_error {
        return Err(config_error);
    }
    refuse_conflicts(&mut command, &matches);
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command).exit())
}

/// Conflicts clap's `conflicts_with` cannot say: it counts a value from the
/// environment as given, and `serve --no-web` must win over
/// `PEERPIPE_WEB_DIR` but conflict with `--web-dir` on the command line. Ends
/// the process with a usage error as clap does.
fn refuse_conflicts(command: &mut clap::Command, matches: &clap::ArgMatches) {
    let Some(serve) = matches.subcommand_matches("serve") else {
        return;
    };
    let from_command_line =
        serve.value_source("web_dir") == Some(clap::parser::ValueSource::CommandLine);
    if serve.get_flag("no_web") && from_command_line {
        let serve_command = command.find_subcommand_mut("serve").expect("serve exists");
        serve_command
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "the argument '--no-web' cannot be used with '--web-dir <DIR>'",
            )
            .exit();
    }
}

async fn run(command: Command, quiet: bool) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Token(args) => serve::token(args),
        Command::Id(args) => client::id(&args),
        Command::Peers(args) => client::peers(&args).await,
        Command::Listen(args) => client::listen(&args).await,
        Command::Connect(args) => client::connect(&args).await,
        Command::Demo(args) => demo::run(args.size, quiet).await,
        Command::Send(args) => transfer::send(&args, quiet).await,
        Command::Receive(args) => transfer::receive(&args, quiet).await,
        Command::Share(args) => transfer::share(&args, quiet).await,
        Command::Get(args) => transfer::get(&args, quiet).await,
        Command::Completions(args) => completions(args.shell),
        Command::Config(args) => config::run(&args),
    }
}

/// Writes the completion script for `shell` to stdout.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "peerpipe", &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&script)?;
    stdout.flush()?;
    Ok(())
}

fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,peerpipe=info,peerpipe_server=info,peerpipe_cli=info",
        (false, 1) => "info,peerpipe=debug,peerpipe_server=debug,peerpipe_cli=debug",
        _ => "debug,peerpipe=trace,peerpipe_server=trace,peerpipe_cli=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEERPIPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr (a log pipe whose reader went away) must not take
        // the process down: log lines are dropped, quietly.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // Timestamps help when debugging; for everyday chatter they are noise.
    if verbose > 0 {
        builder.init();
    } else {
        builder.without_time().init();
    }
}
