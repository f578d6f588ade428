//! The transfer commands: `send`/`receive` with a one-time code, and
//! `share`/`get` with a ticket (for anyone, through a door of the sharing
//! device; an old `pp1` ticket among one user's devices).
//!
//! Machine-readable output (the code, the ticket, `--json` lines) goes to stdout;
//! progress bars and chatter go to stderr.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use peerpipe::share::{self, Content, Download, DownloadOptions, Hash, Library, Report};
use peerpipe::{ConnectError, DeviceId, DoorKey, Node, NodeEvent};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use crate::client::{Role, bind_net, explain_bind, node_builder};
use crate::spool::Spool;
use crate::{CodeNetArgs, GetArgs, ReceiveArgs, SendArgs, ShareArgs};
use crate::{identity, lan};

/// First byte of the message in which a sender names its collection.
const ANNOUNCE: u8 = 1;
/// First byte of the message in which a sender names a one-file collection
/// that is a text (`send --text`): the receiver prints it, writes nothing.
const ANNOUNCE_TEXT: u8 = 3;
/// The largest text `send --text` takes and `receive` prints.
const MAX_TEXT: u64 = 64 * 1024;
/// The name of a text's one file in its collection.
const TEXT_NAME: &str = "text";
/// The name of what `send -` reads, without --name.
const STDIN_NAME: &str = "stdin";
/// The message a sender sends when the receiver arrives before hashing is done:
/// the names follow when it is (however long that takes).
const PREPARING: &[u8] = &[2];
/// The message a receiver sends once every file is verified and in place.
const DONE: &[u8] = b"peerpipe-share-done";
/// The start of the message either side sends when it gives up, before the reason.
const FAILED: &[u8] = b"peerpipe-share-failed: ";
/// The reason a receiver gives when its user declined the files.
const DECLINED: &str = "declined";
/// The reason a receiver gives for a problem of its own that the sender cannot
/// help with (an existing file, a path it refuses): its local paths stay its own.
const ENDED: &str = "the receiver ended the transfer";
/// Names shown in the summary of what is coming.
const SUMMARY_NAMES: usize = 5;
/// Ticket prefix of version 1: the collection hash in base32, for this user's
/// devices (still read; no longer made).
const TICKET_PREFIX_USER: &str = "pp1";
/// Ticket prefix of version 2: the collection hash, the sharing device's id
/// and the key of its door, in base32, for devices of any user.
const TICKET_PREFIX: &str = "pp2";
/// Attempts to reach a ticket's device while the server cannot say (the link
/// is down, the request timed out).
const DOOR_ATTEMPTS: u32 = 5;

/// Where output goes, as the flags say.
#[derive(Clone, Copy)]
struct Out {
    json: bool,
    quiet: bool,
}

impl Out {
    /// The one machine-readable line of a command (a code, a ticket).
    fn result(&self, key: &str, value: &str) {
        if self.json {
            println!("{}", json!({ "event": key, key: value }));
        } else {
            // Above the bars on a terminal, as `say`'s lines.
            screen_bars().suspend(|| println!("{value}"));
        }
    }

    /// A `--json` event line (nothing without `--json`).
    fn event(&self, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        }
    }

    /// A line on stderr, printed above the progress bars on screen (not
    /// through them, which would leave pieces of a bar behind).
    fn say(&self, text: impl std::fmt::Display) {
        if !self.quiet {
            if self.json {
                say!("{text}");
            } else {
                screen_bars().suspend(|| say!("{text}"));
            }
        }
    }

    fn bars(&self) -> MultiProgress {
        if self.quiet || self.json {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        } else {
            screen_bars().clone()
        }
    }
}

/// The progress bars drawn on stderr: one set for the whole process, so that
/// lines said meanwhile go above them.
fn screen_bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)))
}

/// The process was told to stop (Ctrl-C, SIGTERM, SIGHUP): how, for the
/// error message.
#[derive(Debug)]
struct Interrupted(&'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Interrupted {}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A bar of bytes, drawn nowhere until it is added to a [`MultiProgress`].
fn bytes_bar(total: u64, label: &str) -> ProgressBar {
    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
        .with_style(style(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ))
        .with_prefix(label.to_owned())
}

/// Hashes the paths into a collection, with a spinner.
async fn hash_paths(paths: Vec<PathBuf>, out: Out, text: bool) -> Result<Arc<Content>> {
    let spinner = out
        .bars()
        .add(ProgressBar::new_spinner().with_message("hashing"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let content = tokio::task::spawn_blocking(move || Content::from_paths(&paths))
        .await
        .context("hashing")??;
    spinner.finish_and_clear();
    let collection = content.collection();
    if text {
        out.say(format_args!(
            "a text, {}",
            crate::demo::human(collection.total_size())
        ));
    } else {
        out.say(format_args!(
            "{}, {} in all",
            files(collection.entries().len()),
            crate::demo::human(collection.total_size())
        ));
    }
    out.event(json!({
        "event": "collection",
        "hash": content.hash().to_hex(),
        "files": collection.entries().len(),
        "bytes": collection.total_size(),
    }));
    Ok(Arc::new(content))
}

pub async fn send(args: &SendArgs, quiet: bool) -> Result<()> {
    let out = Out {
        json: args.code.json,
        quiet,
    };
    let stdin = args.paths.iter().any(|p| p.as_os_str() == "-");
    if stdin && args.paths.len() > 1 {
        bail!(
            "`-` (standard input) is sent alone: send the other paths with another `peerpipe send`"
        );
    }
    if args.name.is_some() && !stdin {
        bail!("--name names what `-` reads from standard input: add `-`, or leave --name out");
    }
    // A spooled input lives until the send ends, and goes then, also when it
    // is interrupted.
    let spool = if let Some(text) = &args.text {
        if text.len() as u64 > MAX_TEXT {
            bail!(
                "the text is {}; --text takes at most {}: send a longer one as a file \
                 (`peerpipe send FILE`, or `peerpipe send -` to read it from standard input)",
                crate::demo::human(text.len() as u64),
                crate::demo::human(MAX_TEXT)
            );
        }
        Some(Spool::bytes(TEXT_NAME, text.as_bytes())?)
    } else if stdin {
        if std::io::stdin().is_terminal() {
            out.say("reading standard input to its end (Ctrl-D ends it)");
        }
        let name = args.name.as_deref().unwrap_or(STDIN_NAME);
        // The spool is held here: an interrupt while stdin is read removes it
        // (the reading thread then writes to a removed file until the exit).
        let (spool, file) = Spool::for_stdin(name)?;
        let reading = tokio::task::spawn_blocking(move || file.fill());
        until_stopped(async { reading.await.context("reading standard input")? }).await?;
        Some(spool)
    } else {
        None
    };
    let paths = match &spool {
        Some(spool) => vec![spool.file().to_path_buf()],
        None => args.paths.clone(),
    };
    let kind = if args.text.is_some() {
        ANNOUNCE_TEXT
    } else {
        ANNOUNCE
    };
    let sending = send_paths(args, paths, kind, out);
    if spool.is_some() {
        until_stopped(sending).await
    } else {
        sending.await
    }
}

/// Runs `work` until it ends or the process is told to stop (Ctrl-C, SIGTERM,
/// SIGHUP): then `work` is dropped and an error returned, so that what the
/// caller holds is cleaned up.
async fn until_stopped<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut hup) = (
        signal(SignalKind::terminate()).context("watching for SIGTERM")?,
        signal(SignalKind::hangup()).context("watching for SIGHUP")?,
    );
    tokio::select! {
        done = work => done,
        _ = tokio::signal::ctrl_c() => Err(Interrupted("interrupted").into()),
        _ = term.recv() => Err(Interrupted("terminated").into()),
        _ = hup.recv() => Err(Interrupted("hung up").into()),
    }
}

/// `send` of files on disk.
async fn send_paths(args: &SendArgs, paths: Vec<PathBuf>, kind: u8, out: Out) -> Result<()> {
    // What would make the send fail is found before a code is handed out.
    let checked = paths.clone();
    tokio::task::spawn_blocking(move || Content::check_paths(&checked))
        .await
        .context("checking the files")??;
    // Hashing runs while the code is fetched and the receiver arrives.
    let text = kind == ANNOUNCE_TEXT;
    let hashing = tokio::spawn(hash_paths(paths, out, text));
    let (node, lan) = join_to_send(&args.code, out).await?;
    // The receiver needs the same server: name it in the hint unless it is
    // the default (or the sender's own, found on the local network).
    let url = crate::client::server_url(&args.code.net.server);
    let server = (url != crate::DEFAULT_SERVER && lan.is_none()).then_some(url);
    let how = How {
        kind,
        server,
        qr: args.qr,
        chosen: args.chosen_code.clone(),
        lan: lan.as_ref(),
    };
    let result = send_on(&node, hashing, out, how).await;
    // A clean stop sends what is still queued for the server (such as the key
    // confirmation the receiver needs to tell a wrong code from a lost sender).
    node.shutdown().await;
    if let Some(server) = lan {
        server.shutdown().await;
    }
    result
}

/// Joins the configured server to send; with `--lan`, or when no server is
/// configured and none runs at the default address, a server of this
/// command's own for the local network (returned: it must outlive the node).
async fn join_to_send(args: &CodeNetArgs, out: Out) -> Result<(Node, Option<lan::LanServer>)> {
    if let Some(node) = join_configured(args, out, "sending on the local network").await? {
        return Ok((node, None));
    }
    let server = lan::LanServer::start().await?;
    let mut net = args.net.clone();
    net.server = server.url();
    let node = bind_net(&net, None, identity::short_lived()).await?;
    Ok((node, Some(server)))
}

/// Joins the configured server to receive `code`; with `--lan`, or when no
/// server is configured and none runs at the default address, the server of
/// the sender that announces the code's number on the local network.
async fn join_to_receive(args: &CodeNetArgs, code: &str, out: Out) -> Result<Node> {
    if let Some(node) =
        join_configured(args, out, "looking for the sender on the local network").await?
    {
        return Ok(node);
    }
    let nameplate = code
        .parse::<peerpipe_proto::code::Code>()
        .map_err(|e| anyhow!("not a valid code: {e}"))?
        .nameplate();
    let url = lan::find(nameplate, args.net.timeout).await?;
    out.say(format_args!("found the sender on the local network: {url}"));
    let mut net = args.net.clone();
    net.server = url;
    bind_net(&net, None, identity::short_lived()).await
}

/// Joins the configured server, unless `--lan` says not to; `None` when the
/// local network is to be used instead (with `--lan`, or when no server is
/// configured and none runs at the default address: then it says so, and
/// `instead` what it does).
async fn join_configured(args: &CodeNetArgs, out: Out, instead: &str) -> Result<Option<Node>> {
    if args.lan {
        return Ok(None);
    }
    let (builder, url) = node_builder(&args.net, args.token.as_deref(), identity::short_lived())?;
    match builder.bind().await {
        Ok(node) => Ok(Some(node)),
        Err(e) if lan::no_server_here(&args.net.server, &e) => {
            out.say(format_args!(
                "no server is configured and none runs at {url}: {instead}"
            ));
            Ok(None)
        }
        Err(e) => Err(explain_bind(&url, e)),
    }
}

/// How `send_on` offers what it sends.
struct How<'a> {
    /// [`ANNOUNCE`] or [`ANNOUNCE_TEXT`].
    kind: u8,
    /// The server to name in the receive hint (none: the default).
    server: Option<String>,
    /// Also show the receive command as a QR code.
    qr: bool,
    /// The code to offer (`send --code`); none: one the server draws.
    chosen: Option<String>,
    /// The server of this command's own for the local network, which
    /// announces the code's number.
    lan: Option<&'a lan::LanServer>,
}

async fn send_on(
    node: &Node,
    hashing: tokio::task::JoinHandle<Result<Arc<Content>>>,
    out: Out,
    how: How<'_>,
) -> Result<()> {
    let offer = match &how.chosen {
        Some(code) => node.offer_chosen_code(code).await,
        None => node.offer_code().await,
    }
    .context("getting a code from the server")?;
    let _announcing = how
        .lan
        .map(|server| server.announce(offer.nameplate()))
        .transpose()?;
    out.result("code", offer.code());
    let with_server = match (how.server, how.lan) {
        (Some(s), _) => format!(" --server {s}"),
        (None, Some(_)) => " --lan".to_owned(),
        (None, None) => String::new(),
    };
    let command = format!("peerpipe receive {}{with_server}", offer.code());
    out.say(format_args!("on the other device run: {command}"));
    if how.qr {
        // Asked for: shown even with -q, on stderr like all chatter.
        match crate::qr::render(&command) {
            Ok(lines) => say!("{}", lines.join("\n")),
            Err(e) => say!("no QR code: {e:#}"),
        }
    }
    // A hashing failure ends the command at once, receiver or not.
    let mut hashing = hashing;
    let mut hashed = None;
    let accept = offer.accept();
    tokio::pin!(accept);
    let conn = loop {
        tokio::select! {
            conn = &mut accept => break conn.context("waiting for the receiver")?,
            done = &mut hashing, if hashed.is_none() => {
                hashed = Some(done.context("hashing")??);
            }
        }
    };
    out.say(format_args!("sending to {}", conn.peer().id.short()));
    let content = match hashed {
        Some(content) => content,
        None => {
            conn.send(Bytes::from_static(PREPARING))
                .await
                .context("telling the receiver to wait for hashing")?;
            match hashing.await.context("hashing") {
                Ok(Ok(content)) => content,
                Ok(Err(e)) | Err(e) => {
                    let mut why = FAILED.to_vec();
                    why.extend_from_slice(format!("{e:#}").as_bytes());
                    let _ = conn.send(Bytes::from(why)).await;
                    conn.close().await;
                    return Err(e);
                }
            }
        }
    };
    let library = Library::new();
    library.add(content.clone());
    let mut announce = vec![how.kind];
    announce.extend_from_slice(content.hash().as_bytes());
    conn.send(Bytes::from(announce))
        .await
        .context("naming the files")?;
    tokio::spawn(share::serve(conn.clone(), library));
    let started = Instant::now();
    // A spinner while the receiver looks at the offer (it may ask its user);
    // the bar once bytes flow.
    let waiting = out.bars().add(
        ProgressBar::new_spinner().with_message("waiting for the receiver to accept the files"),
    );
    waiting.enable_steady_tick(Duration::from_millis(120));
    let bar = bytes_bar(content.collection().total_size(), "sending");
    let ticker = {
        let (bars, bar, content) = (out.bars(), bar.clone(), content.clone());
        let waiting = waiting.clone();
        tokio::spawn(async move {
            let mut shown = false;
            loop {
                let uploaded = content.uploaded();
                if uploaded > 0 && !shown {
                    shown = true;
                    waiting.finish_and_clear();
                    bars.add(bar.clone());
                }
                bar.set_position(uploaded);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let finished = loop {
        match conn.recv().await {
            Ok(Some(message)) if message.as_ref() == DONE => break Ok(()),
            Ok(Some(message)) if message.starts_with(FAILED) => {
                let why = String::from_utf8_lossy(&message[FAILED.len()..]).into_owned();
                if why == DECLINED {
                    break Err(anyhow!("the receiver declined the files; nothing was sent"));
                }
                if why == ENDED {
                    break Err(anyhow!("{ENDED} (a problem on its side)"));
                }
                break Err(anyhow!("the receiver stopped: {why}"));
            }
            Ok(Some(_)) => continue,
            Ok(None) => {
                break Err(anyhow!(
                    "the receiver closed the connection before it had everything"
                ));
            }
            Err(e) => break Err(anyhow::Error::new(e).context("waiting for the receiver")),
        }
    };
    ticker.abort();
    waiting.finish_and_clear();
    bar.finish_and_clear();
    if finished.is_err() {
        conn.close().await;
    }
    finished?;
    let secs = started.elapsed().as_secs_f64();
    out.say(format_args!(
        "sent {} in {secs:.1} s; the receiver verified everything",
        crate::demo::human(content.collection().total_size())
    ));
    out.event(json!({ "event": "done", "uploaded": content.uploaded(), "seconds": secs }));
    conn.close().await;
    Ok(())
}

pub async fn receive(args: &ReceiveArgs, quiet: bool) -> Result<()> {
    let out = Out {
        json: args.net.json,
        quiet,
    };
    let to_stdout = args.out.as_os_str() == "-";
    // Before the code is used up: a code is good for one try.
    if to_stdout && args.net.json {
        bail!(
            "-o - writes the file to stdout, and so does --json with its events: leave one out; the code is not used up"
        );
    }
    if !to_stdout
        && let Ok(meta) = std::fs::metadata(&args.out)
        && !meta.is_dir()
    {
        bail!(
            "-o {} is a file, not a directory: name a directory to receive into (it is created if absent); the code is not used up",
            args.out.display()
        );
    }
    let code = match &args.code {
        Some(code) => code.clone(),
        None => ask_code().await?,
    };
    let node = join_to_receive(&args.net, &code, out).await?;
    let result = receive_on(&node, &code, args, out).await;
    node.shutdown().await;
    result
}

/// Asks for the code on the terminal (`Code: ` on stderr); without a terminal
/// an error that says to pass it.
async fn ask_code() -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no code given: pass the code `peerpipe send` printed, as in `peerpipe receive 7-amber-falcon` \
             (receive asks for it only when stdin is a terminal)"
        );
    }
    let line = tokio::task::spawn_blocking(|| {
        use std::io::Write as _;
        let mut err = std::io::stderr();
        let _ = write!(err, "Code: ");
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("asking for the code")?
    .context("reading the code")?;
    let code = line.trim();
    if code.is_empty() {
        bail!("no code typed: type the code `peerpipe send` printed, like 7-amber-falcon");
    }
    Ok(code.to_owned())
}

/// What a sender announced.
enum Offer {
    /// A collection of files.
    Files(Hash),
    /// A text (`send --text`): a one-file collection to print.
    Text(Hash),
}

async fn receive_on(node: &Node, code: &str, args: &ReceiveArgs, out: Out) -> Result<()> {
    let conn = node.claim_code(code).await.context("using the code")?;
    // Only files received into a directory leave verified parts to resume from.
    let mut resumable = false;
    // Ctrl-C (or SIGTERM, SIGHUP) stops the receive as a failure would: what
    // arrived verified stays, and the sender is told at once.
    let outcome = until_stopped(async {
        match announced(&conn, args.net.net.timeout, out).await? {
            Offer::Text(hash) => receive_text(&conn, hash, args.net.net.timeout, out).await,
            Offer::Files(hash) if args.out.as_os_str() == "-" => {
                receive_stdout(&conn, hash, args, out).await
            }
            Offer::Files(hash) => {
                resumable = true;
                receive_files(&conn, hash, args, out).await
            }
        }
    })
    .await;
    match outcome {
        Ok(finished) => {
            // Everything is written out and verified: a sender that went
            // away just now does not make that a failure.
            if let Err(e) = conn.send_confirmed(Bytes::from_static(DONE)).await {
                tracing::warn!("could not tell the sender that everything arrived: {e}");
            }
            conn.close().await;
            finished(out);
            Ok(())
        }
        Err(e) => {
            // Tell the sender why, so it does not wait for a receiver that is gone.
            let mut why = FAILED.to_vec();
            why.extend_from_slice(reason_for_sender(&e).as_bytes());
            let _ = conn.send(Bytes::from(why)).await;
            conn.close().await;
            Err(explain(e, args, resumable))
        }
    }
}

/// What a successful receive says once the sender was told.
type Finished = Box<dyn FnOnce(Out) + Send>;

/// The receiver's own words for why a receive failed.
fn explain(e: anyhow::Error, args: &ReceiveArgs, resumable: bool) -> anyhow::Error {
    if e.is::<NoSpace>() {
        return anyhow!("{e}; the sender needs to send again (a code is good for one try)");
    }
    if e.is::<Declined>() || e.is::<NotOne>() {
        return e;
    }
    if let Some(share::ShareError::Exists(path)) = e.downcast_ref::<share::ShareError>() {
        return anyhow!(
            "{} exists and differs from the incoming file; nothing was fetched. \
             Receive into another directory (-o DIR), remove or rename that \
             file, or replace it with --force; the sender needs to send again (a code \
             is good for one try)",
            path.display()
        );
    }
    if !resumable {
        return e;
    }
    if e.is::<Interrupted>() {
        return anyhow!(
            "{e}; what arrived verified stays in {0}: to fetch only the rest, ask the \
             sender for a new code and run `peerpipe receive NEW_CODE -o {0}`",
            args.out.display()
        );
    }
    if !matches!(
        e.downcast_ref::<share::ShareError>(),
        Some(share::ShareError::UnsafeTarget(..) | share::ShareError::Input(_))
    ) {
        return e.context(format!(
            "interrupted; what arrived verified stays in {0}: to fetch only the rest, \
             ask the sender for a new code and run `peerpipe receive NEW_CODE -o {0}`",
            args.out.display()
        ));
    }
    e
}

/// Receives a collection into the `-o` directory.
async fn receive_files(
    conn: &peerpipe::Connection,
    hash: Hash,
    args: &ReceiveArgs,
    out: Out,
) -> Result<Finished> {
    let mut options = DownloadOptions::new(args.out.clone());
    options.force = args.force;
    options.cursor = Some(0);
    // A code names one sender, and no other source can come: once its
    // connection is gone, the download is over.
    options.no_source_timeout = Duration::from_secs(1);
    // Nothing is written or fetched before the user has seen what is coming.
    options.confirm = true;
    let download = Download::start(hash, options, Library::new());
    download.add_source(conn.clone());
    // `None`: the download ended before it knew what is coming; `follow` says why.
    if let Some(collection) = download.offered().await {
        check_space(&args.out, download.to_write().unwrap_or(0))?;
        accept(&collection, args, out).await?;
    }
    download.proceed();
    let report = follow(&download, out).await?;
    Ok(Box::new(move |out| finish_report(&report, out)))
}

/// Receives the one file offered onto stdout (`-o -`).
async fn receive_stdout(
    conn: &peerpipe::Connection,
    hash: Hash,
    args: &ReceiveArgs,
    out: Out,
) -> Result<Finished> {
    let single = share::Single::fetch(conn, hash, args.net.net.timeout).await?;
    let collection = single.collection();
    let count = collection.entries().len();
    if count != 1 {
        return Err(NotOne(count).into());
    }
    accept(collection, args, out).await?;
    let total = collection.total_size();
    let bar = out.bars().add(bytes_bar(total, "receiving"));
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let (bar, written) = (bar.clone(), written.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(written.load(std::sync::atomic::Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let mut stdout = tokio::io::stdout();
    let result = single
        .write_to(conn, &mut stdout, &written, STALL)
        .await
        .map_err(|e| match e {
            share::ShareError::Output(io) => anyhow::Error::new(io).context("writing to stdout"),
            e => e.into(),
        });
    ticker.abort();
    bar.finish_and_clear();
    let bytes = result?;
    let secs = started.elapsed().as_secs_f64();
    Ok(Box::new(move |out| {
        out.say(format_args!(
            "received {} to stdout in {secs:.1} s, verified",
            crate::demo::human(bytes)
        ));
    }))
}

/// How long `-o -` and a text wait for the next bytes from the sender.
const STALL: Duration = Duration::from_secs(30);

/// Receives a text and prints it on stdout (with `--json` as a `text` event);
/// nothing is written to disk.
async fn receive_text(
    conn: &peerpipe::Connection,
    hash: Hash,
    limit: Duration,
    out: Out,
) -> Result<Finished> {
    let single = share::Single::fetch(conn, hash, limit).await?;
    let collection = single.collection();
    if collection.entries().len() != 1 || collection.total_size() > MAX_TEXT {
        return Err(share::ShareError::Protocol("a text offer that is not one short text").into());
    }
    let mut text = Vec::with_capacity(collection.total_size() as usize);
    let written = std::sync::atomic::AtomicU64::new(0);
    single.write_to(conn, &mut text, &written, STALL).await?;
    // Printed before the sender hears that it arrived.
    if out.json {
        out.event(json!({ "event": "text", "text": String::from_utf8_lossy(&text) }));
        return Ok(Box::new(|_| {}));
    }
    let mut text = printable(text, std::io::stdout().is_terminal());
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(&text)
        .await
        .context("writing the text to stdout")?;
    stdout.flush().await.context("writing the text to stdout")?;
    Ok(Box::new(|_| {}))
}

/// A received text as it is printed: on a terminal, control characters
/// (escape sequences a sender could hide in it) are shown as U+FFFD, line
/// breaks and tabs kept.
fn printable(text: Vec<u8>, terminal: bool) -> Vec<u8> {
    if !terminal {
        return text;
    }
    String::from_utf8_lossy(&text)
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect::<String>()
        .into_bytes()
}

/// Refuses a download that does not fit on the filesystem of `dir`.
fn check_space(dir: &std::path::Path, needed: u64) -> Result<()> {
    if needed == 0 {
        return Ok(());
    }
    match crate::space::available(dir) {
        Some((free, at)) if free < needed => Err(NoSpace {
            needed,
            free,
            at: at.display().to_string(),
        }
        .into()),
        Some(_) => Ok(()),
        None => {
            tracing::debug!("cannot tell the free space for {}", dir.display());
            Ok(())
        }
    }
}

/// What is offered does not fit on the receiver's disk.
#[derive(Debug)]
struct NoSpace {
    needed: u64,
    free: u64,
    at: String,
}

impl std::fmt::Display for NoSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not enough free space: needs {}, {} free on {}; nothing was fetched. \
             Make room or write elsewhere (-o DIR)",
            crate::demo::human(self.needed),
            crate::demo::human(self.free),
            self.at
        )
    }
}

impl std::error::Error for NoSpace {}

/// `-o -` takes one file, and the offer has another number.
#[derive(Debug)]
struct NotOne(usize);

impl std::fmt::Display for NotOne {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the sender offers {}; -o - writes exactly one file to stdout: receive into a \
             directory (-o DIR) instead. Declined, the sender is told (a code is good for one try)",
            files(self.0)
        )
    }
}

impl std::error::Error for NotOne {}

/// The user declined what the sender offers.
#[derive(Debug)]
struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("declined: nothing was received (the sender is told)")
    }
}

impl std::error::Error for Declined {}

/// Shows what is coming and, when stdin is a terminal and `--yes` is not
/// given, asks whether to take it; `Err(Declined)` for anything but yes.
async fn accept(collection: &share::Collection, args: &ReceiveArgs, out: Out) -> Result<()> {
    let ask = !args.yes && std::io::stdin().is_terminal();
    let summary = summary(collection);
    if ask {
        // Shown even with -q: a question needs its context.
        say!("{summary}");
    } else {
        out.say(&summary);
    }
    out.event(json!({
        "event": "offer",
        "files": collection.entries().len(),
        "bytes": collection.total_size(),
    }));
    if !ask {
        return Ok(());
    }
    let answer = tokio::task::spawn_blocking(|| {
        use std::io::Write as _;
        let mut err = std::io::stderr();
        let _ = write!(err, "Accept? [y/N] ");
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("asking whether to accept")?
    .context("reading the answer")?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Declined.into()),
    }
}

/// What is coming, for the user: "3 files, 1.2 GiB in all" and the first
/// top-level names with their sizes.
fn summary(collection: &share::Collection) -> String {
    // Top-level names in the collection's order, with their files and bytes.
    let mut tops: Vec<(&str, usize, u64)> = Vec::new();
    for entry in collection.entries() {
        let (top, nested) = match entry.path.split_once('/') {
            Some((top, _)) => (top, true),
            None => (entry.path.as_str(), false),
        };
        match tops.iter_mut().find(|(name, ..)| *name == top) {
            Some((_, files, bytes)) => {
                *files += 1;
                *bytes += entry.size;
            }
            None => tops.push((top, usize::from(nested), entry.size)),
        }
    }
    let mut text = format!(
        "the sender offers {}, {} in all:",
        files(collection.entries().len()),
        crate::demo::human(collection.total_size())
    );
    for (name, nested, bytes) in tops.iter().take(SUMMARY_NAMES) {
        let what = if *nested > 0 {
            format!(
                "{name}/ ({}, {})",
                files(*nested),
                crate::demo::human(*bytes)
            )
        } else {
            format!("{name} ({})", crate::demo::human(*bytes))
        };
        text.push_str(&format!("\n  {what}"));
    }
    if tops.len() > SUMMARY_NAMES {
        text.push_str(&format!("\n  and {} more", tops.len() - SUMMARY_NAMES));
    }
    text
}

/// What the sender is told when the receive fails: never a local path of the
/// receiver's.
fn reason_for_sender(e: &anyhow::Error) -> String {
    if e.is::<Declined>() {
        return DECLINED.to_owned();
    }
    if let Some(Interrupted(how)) = e.downcast_ref::<Interrupted>() {
        return match *how {
            "interrupted" => "interrupted (Ctrl-C)".to_owned(),
            "terminated" => "terminated (SIGTERM)".to_owned(),
            other => other.to_owned(),
        };
    }
    if let Some(NotOne(n)) = e.downcast_ref::<NotOne>() {
        return format!(
            "the receiver takes one file only (to its standard output) and was offered {}",
            files(*n)
        );
    }
    match e.downcast_ref::<share::ShareError>() {
        // The reason (a full disk, say) without the path.
        Some(share::ShareError::Io { source, .. }) => {
            format!("could not write the files: {source}")
        }
        // About the sender's data or the connection: nothing local.
        Some(
            share::ShareError::Corrupt
            | share::ShareError::Collection(_)
            | share::ShareError::NoSource
            | share::ShareError::Timeout(_)
            | share::ShareError::Protocol(_)
            | share::ShareError::NotFound
            | share::ShareError::NotHeld,
        ) => format!("{e}"),
        _ => ENDED.to_owned(),
    }
}

/// Waits for the sender to name its collection: within `limit`, or for as long
/// as it says it is still hashing.
async fn announced(conn: &peerpipe::Connection, limit: Duration, out: Out) -> Result<Offer> {
    let mut spinner: Option<ProgressBar> = None;
    loop {
        let next = conn.recv();
        let message = if spinner.is_some() {
            next.await
        } else {
            tokio::time::timeout(limit, next)
                .await
                .context("waiting for the sender to name the files")?
        }
        .context("waiting for the sender to name the files")?
        .ok_or_else(|| anyhow!("the sender closed the connection"))?;
        match message.split_first() {
            Some((&kind @ (ANNOUNCE | ANNOUNCE_TEXT), rest)) if rest.len() == 32 => {
                if let Some(bar) = spinner {
                    bar.finish_and_clear();
                }
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(rest);
                let hash = Hash::from_bytes(bytes);
                return Ok(if kind == ANNOUNCE_TEXT {
                    Offer::Text(hash)
                } else {
                    Offer::Files(hash)
                });
            }
            _ if message.as_ref() == PREPARING && spinner.is_none() => {
                let bar = out.bars().add(
                    ProgressBar::new_spinner().with_message("the sender is hashing its files"),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                spinner = Some(bar);
                out.event(json!({ "event": "sender_hashing" }));
            }
            _ if message.starts_with(FAILED) => {
                let why = String::from_utf8_lossy(&message[FAILED.len()..]).into_owned();
                bail!("the sender stopped: {why}");
            }
            _ => bail!("the sender is not sending files (unexpected message)"),
        }
    }
}

pub async fn share(args: &ShareArgs, quiet: bool) -> Result<()> {
    let out = Out {
        json: args.json,
        quiet,
    };
    let identity = Role::Holds("share").identity(&args.client.net)?;
    let content = hash_paths(args.paths.clone(), out, false).await?;
    // The same device sharing the same files gives the same ticket.
    let key = DoorKey::derive(&identity.secret_bytes(), content.hash().as_bytes());
    let ticket = Ticket::Door {
        hash: content.hash(),
        device: identity.device_id(),
        key: key.clone(),
    };
    let library = Library::new();
    library.add(content.clone());
    let node = bind_net(&args.client.net, Some(&args.client.token), identity).await?;
    node.open_door(&key)
        .await
        .context("opening the ticket's door")?;
    out.result("ticket", &ticket.to_string());
    let url = crate::client::server_url(&args.client.net.server);
    let with_server = if url == crate::DEFAULT_SERVER {
        String::new()
    } else {
        format!(" --server {url}")
    };
    out.say(format_args!(
        "sharing; anyone with the ticket can fetch the files (their own token, or none): \
         peerpipe get TICKET{with_server}  (Ctrl-C stops)"
    ));
    let serving = tokio::spawn(accept_share(node.clone(), library, None));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = serving => {}
    }
    out.say(format_args!(
        "stopped; uploaded {}",
        crate::demo::human(content.uploaded())
    ));
    node.shutdown().await;
    Ok(())
}

pub async fn get(args: &GetArgs, quiet: bool) -> Result<()> {
    let out = Out {
        json: args.json,
        quiet,
    };
    let ticket: Ticket = args.ticket.parse()?;
    if matches!(ticket, Ticket::User(_)) && args.token.is_none() {
        bail!(
            "a pp1 ticket is for the devices of the user who shared it: give that user's \
             --token (a pp2 ticket, which `share` prints now, works for anyone)"
        );
    }
    let node = bind_net(&args.net, args.token.as_deref(), identity::short_lived()).await?;
    let result = get_on(&node, &ticket, args, out).await;
    node.shutdown().await;
    result
}

async fn get_on(node: &Node, ticket: &Ticket, args: &GetArgs, out: Out) -> Result<()> {
    let hash = ticket.hash();
    let library = Library::new();
    let mut options = DownloadOptions::new(args.out.clone());
    options.force = args.force;
    // Nothing is written before the free space is checked.
    options.confirm = true;
    let download = Arc::new(Download::start(hash, options, library.clone()));
    let accepting = tokio::spawn(accept_share(
        node.clone(),
        library.clone(),
        Some(download.clone()),
    ));
    // Without a token the device is anonymous: it has no devices of its own.
    let peers = match &args.token {
        Some(_) => node
            .online_peers()
            .await
            .context("listing this user's devices")?,
        None => Vec::new(),
    };
    if peers.is_empty() && matches!(ticket, Ticket::User(_)) {
        out.say("no other device of this user is online yet; waiting");
    }
    // The ticket's device is reached through its door (once).
    let door_device = match ticket {
        Ticket::Door { device, .. } => Some(*device),
        Ticket::User(_) => None,
    };
    let peers: Vec<_> = peers
        .into_iter()
        .filter(|p| Some(p.id) != door_device)
        .collect();
    let others = peers.len();
    for peer in peers {
        tokio::spawn(dial(
            node.clone(),
            peer.id,
            library.clone(),
            download.clone(),
        ));
    }
    let door = match ticket {
        Ticket::Door { device, key, .. } => {
            let (node, device, key) = (node.clone(), *device, key.clone());
            let (library, download) = (library.clone(), download.clone());
            Some(tokio::spawn(async move {
                dial_door(&node, device, &key, &library, &download).await
            }))
        }
        Ticket::User(_) => None,
    };
    // `None`: the download ended before it knew the files; `follow` says why.
    let offered = match door {
        Some(dialing) => {
            tokio::select! {
                offered = download.offered() => offered,
                reached = dialing => {
                    let reached = reached.unwrap_or_else(|e| Err(anyhow!("dialing: {e}")));
                    match reached {
                        // The ticket's device can no longer serve: the
                        // user's own devices may, if any were found.
                        Err(e) if others == 0 => return Err(e),
                        Err(e) => out.say(format_args!("{e:#}; trying this user's devices")),
                        Ok(()) => {}
                    }
                    download.offered().await
                }
            }
        }
        None => download.offered().await,
    };
    if offered.is_some() {
        check_space(&args.out, download.to_write().unwrap_or(0))?;
    }
    download.proceed();
    let report = follow(&download, out).await?;
    finish_report(&report, out);
    if args.seed {
        out.say("seeding to this user's devices (Ctrl-C stops)");
        let _ = tokio::signal::ctrl_c().await;
    }
    accepting.abort();
    Ok(())
}

/// Connects to `peer` for sharing: serves it and fetches from it.
async fn dial(node: Node, peer: peerpipe::DeviceId, library: Library, download: Arc<Download>) {
    match node.connect_service(peer, share::SERVICE).await {
        Ok(conn) => {
            tokio::spawn(share::serve(conn.clone(), library));
            download.add_source(conn);
        }
        Err(e) => tracing::debug!("connecting to {} for sharing: {e}", peer.short()),
    }
}

/// Connects to the device of a ticket through its door, for sharing: serves it
/// and fetches from it. Tries again while the server cannot say whether the
/// device is there; fails when it says the device is not sharing.
async fn dial_door(
    node: &Node,
    peer: DeviceId,
    key: &DoorKey,
    library: &Library,
    download: &Arc<Download>,
) -> Result<()> {
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=DOOR_ATTEMPTS {
        match node.connect_door(peer, share::SERVICE, key).await {
            Ok(conn) => {
                tokio::spawn(share::serve(conn.clone(), library.clone()));
                download.add_source(conn);
                return Ok(());
            }
            Err(ConnectError::NotFound | ConnectError::PeerOffline) => bail!(
                "the device that shared this ticket is not sharing it now (it stopped, \
                 is offline, or uses another server; or the ticket is damaged)"
            ),
            Err(ConnectError::Rejected) => {
                bail!("the device that shared this ticket stopped sharing it")
            }
            Err(e @ ConnectError::Handshake(_)) => {
                return Err(anyhow::Error::new(e)
                    .context("the device that shared this ticket did not prove it holds its key"));
            }
            Err(e) if attempt == DOOR_ATTEMPTS => {
                return Err(
                    anyhow::Error::new(e).context("reaching the device that shared the ticket")
                );
            }
            Err(e) => {
                tracing::debug!("reaching the ticket's device (attempt {attempt}): {e}");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Accepts share connections from the user's devices (and dials devices that
/// come online when downloading): each is served, and fetched from.
async fn accept_share(node: Node, library: Library, download: Option<Arc<Download>>) {
    while let Some(event) = node.next_event().await {
        match event {
            NodeEvent::IncomingConnection(incoming)
                if incoming.service() == Some(share::SERVICE) =>
            {
                match incoming.accept().await {
                    Ok(conn) => {
                        tokio::spawn(share::serve(conn.clone(), library.clone()));
                        if let Some(d) = &download {
                            d.add_source(conn);
                        }
                    }
                    Err(e) => tracing::debug!("accepting a share connection: {e}"),
                }
            }
            NodeEvent::IncomingConnection(incoming) => incoming.reject().await,
            NodeEvent::PeerOnline(peer) => {
                if let Some(d) = &download {
                    tokio::spawn(dial(node.clone(), peer.id, library.clone(), d.clone()));
                }
            }
            NodeEvent::Stopped { error } => {
                tracing::error!("the server link stopped: {error}");
                return;
            }
            _ => {}
        }
    }
}

/// Shows a download's progress (bars, or `--json` lines) until it ends.
async fn follow(download: &Download, out: Out) -> Result<Report> {
    let bars = out.bars();
    let started = Instant::now();
    let mut total_bar: Option<ProgressBar> = None;
    let mut file_bars: Vec<Option<ProgressBar>> = Vec::new();
    let mut last_json = Instant::now() - Duration::from_secs(1);
    let mut announced = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Some((done, total)) = download.progress() {
            let files = download.files();
            if !announced {
                announced = true;
                out.event(json!({ "event": "collection", "files": files.len(), "bytes": total }));
                total_bar = Some(bars.add(bytes_bar(total, "total")));
                file_bars = files.iter().map(|_| None).collect();
            }
            if let Some(bar) = &total_bar {
                bar.set_position(done);
            }
            if files.len() > 1 {
                for (slot, file) in file_bars.iter_mut().zip(&files) {
                    let complete = file.done == file.size;
                    match slot {
                        None if file.done > 0 && !complete => {
                            let bar = bars.add(bytes_bar(file.size, &short_name(&file.path)));
                            bar.set_position(file.done);
                            *slot = Some(bar);
                        }
                        Some(bar) => {
                            bar.set_position(file.done);
                            if complete {
                                bar.finish_and_clear();
                            }
                        }
                        None => {}
                    }
                }
            }
            if last_json.elapsed() >= Duration::from_millis(500) {
                last_json = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                out.event(json!({
                    "event": "progress",
                    "done": done,
                    "total": total,
                    "seconds": secs,
                }));
            }
        }
        if download.is_finished() {
            break;
        }
    }
    let result = download.finish().await;
    for bar in file_bars.into_iter().flatten() {
        bar.finish_and_clear();
    }
    if let Some(bar) = total_bar {
        bar.finish_and_clear();
    }
    let report = result?;
    let secs = started.elapsed().as_secs_f64();
    out.event(json!({
        "event": "done",
        "bytes": report.total_bytes,
        "seconds": secs,
        "reused_groups": report.reused_groups,
        "missing_groups": report.missing_groups,
        "requested_groups": report.requested_groups,
        "fetched_bytes": report.fetched_bytes,
        "dropped_peers": report.dropped_peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "files": report.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    }));
    Ok(report)
}

fn finish_report(report: &Report, out: Out) {
    if report.reused_groups > 0 {
        out.say(format_args!(
            "resumed: {} was already here and verified, {} fetched",
            crate::demo::human(report.total_bytes.saturating_sub(report.fetched_bytes)),
            crate::demo::human(report.fetched_bytes)
        ));
    }
    for peer in &report.dropped_peers {
        out.say(format_args!(
            "dropped {} (bad or stalled data)",
            peer.short()
        ));
    }
    out.say(format_args!(
        "received {} in {}, verified",
        crate::demo::human(report.total_bytes),
        files(report.files.len())
    ));
}

/// "1 file", "3 files".
fn files(n: usize) -> String {
    if n == 1 {
        "1 file".to_string()
    } else {
        format!("{n} files")
    }
}

fn short_name(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.chars().count() > 12 {
        name.chars().take(11).chain(std::iter::once('…')).collect()
    } else {
        name.to_owned()
    }
}

/// What a ticket names: a collection, and where to fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ticket {
    /// `pp1`: from this user's devices that hold it.
    User(Hash),
    /// `pp2`: from `device`, through the door of `key`, by anyone.
    Door {
        hash: Hash,
        device: DeviceId,
        key: DoorKey,
    },
}

impl Ticket {
    fn hash(&self) -> Hash {
        match self {
            Ticket::User(hash) | Ticket::Door { hash, .. } => *hash,
        }
    }
}

impl std::fmt::Display for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (prefix, bytes) = match self {
            Ticket::User(hash) => (TICKET_PREFIX_USER, hash.as_bytes().to_vec()),
            Ticket::Door { hash, device, key } => (
                TICKET_PREFIX,
                [&hash.as_bytes()[..], device.as_bytes(), &key.0].concat(),
            ),
        };
        let body = data_encoding::BASE32_NOPAD.encode(&bytes);
        write!(f, "{prefix}{}", body.to_ascii_lowercase())
    }
}

impl std::str::FromStr for Ticket {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let damaged = || anyhow!("the ticket is damaged (copy it whole)");
        let decode = |body: &str| {
            data_encoding::BASE32_NOPAD
                .decode(body.to_ascii_uppercase().as_bytes())
                .map_err(|_| damaged())
        };
        let part = |bytes: &[u8], at: usize| -> Result<[u8; 32]> {
            bytes
                .get(at..at + 32)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(damaged)
        };
        if let Some(body) = text.strip_prefix(TICKET_PREFIX) {
            let bytes = decode(body)?;
            if bytes.len() != 96 {
                return Err(damaged());
            }
            let device = DeviceId::from_bytes(part(&bytes, 32)?).map_err(|_| damaged())?;
            return Ok(Ticket::Door {
                hash: Hash::from_bytes(part(&bytes, 0)?),
                device,
                key: DoorKey(part(&bytes, 64)?),
            });
        }
        if let Some(body) = text.strip_prefix(TICKET_PREFIX_USER) {
            let bytes = decode(body)?;
            if bytes.len() != 32 {
                return Err(damaged());
            }
            return Ok(Ticket::User(Hash::from_bytes(part(&bytes, 0)?)));
        }
        bail!("not a peerpipe ticket (it starts with {TICKET_PREFIX})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_on_a_terminal_lose_their_control_characters() {
        assert_eq!(
            printable(b"a\x1b[2Jb\tc\r\n".to_vec(), true),
            "a\u{FFFD}[2Jb\tc\u{FFFD}\n".as_bytes()
        );
        assert_eq!(printable(b"a\x1bb".to_vec(), false), b"a\x1bb");
    }

    #[test]
    fn tickets_read_back_and_damage_is_refused() {
        let hash = Hash::of(b"photos");
        let device = peerpipe::Identity::from_secret_bytes([5; 32]).device_id();
        let key = DoorKey::derive(&[6; 32], hash.as_bytes());
        for ticket in [Ticket::User(hash), Ticket::Door { hash, device, key }] {
            let t = ticket.to_string();
            assert_eq!(t.parse::<Ticket>().unwrap(), ticket);
            assert_eq!(format!(" {t}\n").parse::<Ticket>().unwrap(), ticket);
            let shouted = format!("{}{}", &t[..3], t[3..].to_uppercase());
            assert_eq!(shouted.parse::<Ticket>().unwrap(), ticket);
            assert!(t[..t.len() - 2].parse::<Ticket>().is_err());
            assert!(format!("{t}a").parse::<Ticket>().is_err());
        }
        assert!(Ticket::User(hash).to_string().starts_with("pp1"));
        let door = Ticket::Door {
            hash,
            device,
            key: DoorKey([0; 32]),
        }
        .to_string();
        assert!(door.starts_with("pp2"));
        assert!("xx1abc".parse::<Ticket>().is_err());
    }
}
